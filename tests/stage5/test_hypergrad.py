"""Each hypergradient option against a finite-difference estimate of the bilevel gradient it claims.

The tiny problem (float64): φ = {"a": R^3, "b": R^{2x2}} (7 numbers), a "fused image"
z(φ) = tanh(M φ + c) ∈ R^5, a curved lower objective F(φ) = ½‖Aφ − b‖² + 0.1 Σ cos φ (its Hessian
changes with φ, so the Jacobian dφ_K/dφ₀ is not constant) and an upper loss L_d(z) = Σ w_i (z_i − t_i)²
+ 0.3 Σ z_i³. Gradients are compared with central differences of the true objective.

Tolerances. Central differences with step ε have error ε²/6·|Φ'''| + u·|Φ|/ε (u = 1.1e-16 in float64).
With ε = 1e-5, |Φ'''| = O(10) and |Φ| = O(1) this is below 1e-9, so `atol=1e-7, rtol=1e-6` leaves a
margin of 100x and still catches any missing second-order term, whose size here is ~1e-2 (checked:
first-order and unrolled differ by far more than the tolerance). For `implicit`, the proximal lower
problem (λ = 10 > max |eig(∇²F)| ≈ 6.2, asserted below, so it is strongly convex) is solved by 80
gradient steps of η = 0.1, each contracting the error by ≤ 0.62, so ‖φ_K − φ*‖ ≤ 0.62^80 ≈ 3e-17 relative: rounding level.
Neumann with J = 60 terms leaves ρ^{J+1}/(1−ρ) ≤ 0.7^61/0.3 < 1e-8 of ‖v‖ (ρ = ‖H‖/λ < 0.7); CG on the
7×7 system is exact after 7 iterations up to rounding. The FD of φ*(φ₀ ± ε) inherits the solver residual divided by ε,
far below 1e-7.
"""

from __future__ import annotations

import pytest
import torch

from fusionlab.detection.hypergrad import Hypergrad, hypergradient, solve_lower

g = torch.Generator().manual_seed(0)
M = torch.randn(5, 7, generator=g, dtype=torch.float64) * 0.5
C = torch.randn(5, generator=g, dtype=torch.float64) * 0.1
A = torch.randn(6, 7, generator=g, dtype=torch.float64) * 0.5
B = torch.randn(6, generator=g, dtype=torch.float64)
W = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
T = torch.randn(5, generator=g, dtype=torch.float64) * 0.3
PHI0 = {"a": torch.randn(3, generator=g, dtype=torch.float64), "b": torch.randn(2, 2, generator=g, dtype=torch.float64)}


def flat(p: dict) -> torch.Tensor:
    return torch.cat([p["a"].reshape(-1), p["b"].reshape(-1)])


def unflat(x: torch.Tensor) -> dict:
    return {"a": x[:3], "b": x[3:].reshape(2, 2)}


def z_of(p: dict) -> torch.Tensor:
    return torch.tanh(M @ flat(p) + C)


def F(p: dict) -> torch.Tensor:
    x = flat(p)
    return 0.5 * ((A @ x - B) ** 2).sum() + 0.1 * torch.cos(x).sum()


def upper(p: dict) -> torch.Tensor:
    z = z_of(p)
    return (W * (z - T) ** 2).sum() + 0.3 * (z ** 3).sum()


def v_at(p: dict) -> list[torch.Tensor]:
    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in p.items()}
    return list(torch.autograd.grad(upper(leaves), list(leaves.values())))


def descend(x0: torch.Tensor, steps: int, lr: float, prox: float = 0.0) -> torch.Tensor:
    """The lower level as the option defines it, on a flat vector (reference, no fusionlab code)."""
    x = x0.clone()
    for _ in range(steps):
        grad = A.T @ (A @ x - B) - 0.1 * torch.sin(x)  # ∇F, written out
        x = x - lr * (grad + prox * (x - x0))
    return x


def central_difference(phi) -> torch.Tensor:
    x0, eps = flat(PHI0), 1e-5
    out = torch.zeros_like(x0)
    for i in range(len(x0)):
        e = torch.zeros_like(x0)
        e[i] = eps
        out[i] = (phi(x0 + e) - phi(x0 - e)) / (2 * eps)
    return out


def option_gradient(hg: Hypergrad) -> torch.Tensor:
    solution = solve_lower(F, PHI0, hg)
    return torch.cat([t.reshape(-1) for t in hypergradient(F, solution, v_at(solution.last), hg)])


def test_unrolled_matches_the_derivative_through_k_steps():
    hg = Hypergrad("unrolled", steps=3, lr=0.2)
    fd = central_difference(lambda x: upper(unflat(descend(x, 3, 0.2))))
    torch.testing.assert_close(option_gradient(hg), fd, atol=1e-7, rtol=1e-6)
    # the second-order terms matter here: first-order is far from the true gradient
    first = option_gradient(Hypergrad("first_order", steps=3, lr=0.2))
    assert (first - fd).abs().max() > 1e-3


@pytest.mark.parametrize("solver,steps", [("neumann", 60), ("cg", 7)])
def test_implicit_matches_the_derivative_of_the_proximal_solution(solver, steps):
    lam = 10.0
    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(lambda x: F(unflat(x)), flat(PHI0)))
    assert eig.abs().max() < 0.7 * lam  # the Neumann series converges, CG sees a positive definite system
    hg = Hypergrad("implicit", steps=80, lr=0.1, prox=lam, solver=solver, solver_steps=steps)
    fd = central_difference(lambda x: upper(unflat(descend(x, 80, 0.1, prox=lam))))
    torch.testing.assert_close(option_gradient(hg), fd, atol=1e-7, rtol=1e-6)


def test_first_order_is_the_gradient_with_the_lower_displacement_held_fixed():
    hg = Hypergrad("first_order", steps=3, lr=0.2)
    shift = descend(flat(PHI0), 3, 0.2) - flat(PHI0)
    fd = central_difference(lambda x: upper(unflat(x + shift)))
    torch.testing.assert_close(option_gradient(hg), fd, atol=1e-7, rtol=1e-6)


def test_first_order_is_exact_when_the_lower_objective_is_linear():
    """dφ_K/dφ₀ = I exactly when ∇F is constant: then first-order is the true bilevel gradient."""
    c = torch.linspace(-1, 1, 7, dtype=torch.float64)

    def linear(p):
        return (c * flat(p)).sum()

    solution = solve_lower(linear, PHI0, Hypergrad("first_order", steps=4, lr=0.1))
    got = torch.cat([t.reshape(-1) for t in hypergradient(linear, solution, v_at(solution.last),
                                                          Hypergrad("first_order", steps=4, lr=0.1))])
    fd = central_difference(lambda x: upper(unflat(x - 4 * 0.1 * c)))
    torch.testing.assert_close(got, fd, atol=1e-7, rtol=1e-6)


def test_lower_solution_reports_the_global_gradient_at_the_start():
    solution = solve_lower(F, PHI0, Hypergrad("unrolled", steps=2, lr=0.1))
    leaves = {k: t.clone().requires_grad_(True) for k, t in PHI0.items()}
    expected = torch.autograd.grad(F(leaves), list(leaves.values()))
    for a, b in zip(solution.grad0, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert len(solution.iterates) == 3 and len(solution.graphs) == 2
