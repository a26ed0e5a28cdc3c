"""The hypergradient of stage 5's bilevel problem (Text2Pixels eq. 7): how the fusion net's
parameters should move so that the detector, trained on the fused images, does better.

The problem, with φ the fusion net's trainable parameters, ω the detector's, F(φ) = f(z(φ)) + g(z(φ))
the fusion net's own stage-4 objective on a batch and L_d(ω; z) the detection loss:

    min_{ω, φ₀}  L_d(ω; z(φ_K(φ₀)))      φ_{k+1} = φ_k − η ∇_φ [F(φ_k) + λ/2 ‖φ_k − φ₀‖²],  k < K

The detector is the upper level; the fusion net is the lower level, whose solution z* = z(φ_K) the
upper level sees. Because the lower problem has many near-minimisers, the upper level selects
among them through the starting point φ₀ (Liu et al.'s initialisation-based bilevel scheme, the
paper's refs [18, 19]). Its hypergradient is

    h = dL_d/dφ₀ = (dφ_K/dφ₀)ᵀ v,     v = ∇_φ L_d(ω; z(φ))|_{φ = φ_K}

and the options differ only in how they treat the Jacobian dφ_K/dφ₀:

* `first_order`:  dφ_K/dφ₀ ≈ I, so h = v. Exact for Φ(φ₀) = L_d(z(φ₀ + sg[φ_K − φ₀])) (the lower-level
  displacement held fixed), and for the true problem whenever F is linear in φ.
* `unrolled`:     exact reverse mode through the K steps (λ = 0):
                  h = (I − η H₀) … (I − η H_{K−1}) v,  H_k = ∇²F(φ_k) applied as Hessian-vector products.
* `implicit`:     the lower problem is proximal, φ*(φ₀) = argmin F(φ) + λ/2 ‖φ − φ₀‖², solved
                  approximately by the K steps; the implicit function theorem at φ_K gives
                  h = (I + H_K/λ)⁻¹ v, solved by a truncated Neumann series Σ_{j≤J} (−H_K/λ)ʲ v
                  (needs ‖H_K‖ < λ) or by J conjugate-gradient iterations (needs I + H_K/λ ≻ 0).

Every gradient here is averaged over data-parallel ranks explicitly (`mean_over_ranks`), so each
rank computes the same lower-level iterates and the same h: the result is the gradient of the
global batch, whatever the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

Params = dict[str, torch.Tensor]
HYPERGRADS = ("first_order", "unrolled", "implicit")


@dataclass(frozen=True)
class Hypergrad:
    """How the lower level is solved and differentiated (see the module docstring)."""

    mode: Literal["first_order", "unrolled", "implicit"] = "unrolled"
    steps: int = 1  # K lower-level gradient steps
    lr: float = 1e-3  # η of those steps
    prox: float = 1.0  # λ of the proximal lower problem (implicit only)
    solver: Literal["neumann", "cg"] = "neumann"  # implicit: how (I + H/λ)⁻¹ v is computed
    solver_steps: int = 5  # J: Neumann terms or CG iterations


def mean_over_ranks(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean of each tensor over the data-parallel ranks (an explicit all-reduce; no-op alone)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])  # one collective for all tensors
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]


def _leaves(params: Params) -> Params:
    return {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}


def _grad(value: torch.Tensor, params: Params, create_graph: bool = False, grad_outputs=None) -> list[torch.Tensor]:
    tensors = list(params.values())
    grads = torch.autograd.grad(value, tensors, grad_outputs=grad_outputs, create_graph=create_graph,
                                retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(tensors, grads, strict=True)]


@dataclass
class LowerSolution:
    """The lower-level iterates φ₀ … φ_K (detached leaves), the global gradient ∇F(φ₀) and, for
    reverse-mode differentiation, each step's local gradient with its graph."""

    iterates: list[Params]
    grad0: list[torch.Tensor]
    value0: torch.Tensor
    graphs: list[list[torch.Tensor]]

    @property
    def last(self) -> Params:
        return self.iterates[-1]


def solve_lower(F: Callable[[Params], torch.Tensor], params0: Params, hg: Hypergrad) -> LowerSolution:
    """K gradient steps on F (plus the proximal term for `implicit`) from φ₀, with rank-global gradients."""
    keep_graph = hg.mode == "unrolled"
    prox = hg.prox if hg.mode == "implicit" else 0.0
    start = _leaves(params0)
    iterates, graphs = [start], []
    grad0, value0 = None, None
    for _ in range(hg.steps):
        p = iterates[-1]
        value = F(p)
        local = _grad(value, p, create_graph=keep_graph)
        g = mean_over_ranks([t.detach() for t in local])
        if grad0 is None:
            grad0, value0 = g, value.detach()
        if keep_graph:
            graphs.append(local)
        nxt = {n: (p[n].detach() - hg.lr * (gi + prox * (p[n].detach() - start[n].detach())))
               for (n, gi) in zip(p, g, strict=True)}
        iterates.append(_leaves(nxt))
    if grad0 is None:  # K = 0: the lower level is not solved at all; φ_K = φ₀
        value = F(start)
        grad0, value0 = mean_over_ranks([t.detach() for t in _grad(value, start)]), value.detach()
    return LowerSolution(iterates, grad0, value0, graphs)


def _hvp(graph: list[torch.Tensor], params: Params, v: list[torch.Tensor]) -> list[torch.Tensor]:
    """Global H v from a rank's gradient graph: local Hessian-vector product, then the rank mean."""
    return mean_over_ranks(_grad(graph, params, grad_outputs=v))


def hypergradient(F: Callable[[Params], torch.Tensor], solution: LowerSolution, v: list[torch.Tensor],
                  hg: Hypergrad) -> list[torch.Tensor]:
    """h = (dφ_K/dφ₀)ᵀ v for the chosen option; `v` is the rank-global ∇_φ L_d at φ_K."""
    if hg.mode == "first_order":
        return [t.detach() for t in v]
    if hg.mode == "unrolled":
        for k in reversed(range(len(solution.graphs))):
            hv = _hvp(solution.graphs[k], solution.iterates[k], v)
            v = [vi - hg.lr * hi for vi, hi in zip(v, hv, strict=True)]
        return [t.detach() for t in v]
    # implicit: (I + H/λ)⁻¹ v with H = ∇²F(φ_K)
    at = solution.last
    graph = _grad(F(at), at, create_graph=True)

    def apply(x: list[torch.Tensor]) -> list[torch.Tensor]:  # H x / λ
        return [t / hg.prox for t in _hvp(graph, at, x)]

    if hg.solver == "neumann":
        term, total = list(v), list(v)
        for _ in range(hg.solver_steps):
            term = [-t for t in apply(term)]
            total = [a + b for a, b in zip(total, term, strict=True)]
        return [t.detach() for t in total]
    return _conjugate_gradient(lambda x: [a + b for a, b in zip(x, apply(x), strict=True)], v, hg.solver_steps)


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _conjugate_gradient(A, b: list[torch.Tensor], iterations: int) -> list[torch.Tensor]:
    """Solve A x = b (A symmetric positive definite, given as a function) from x = 0."""
    x = [torch.zeros_like(t) for t in b]
    r = [t.detach().clone() for t in b]
    p = [t.clone() for t in r]
    rr = _dot(r, r)
    for _ in range(iterations):
        if rr <= 1e-30:
            break
        Ap = [t.detach() for t in A(p)]
        alpha = rr / _dot(p, Ap)
        x = [xi + alpha * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - alpha * ai for ri, ai in zip(r, Ap, strict=True)]
        rr_new = _dot(r, r)
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p, strict=True)]
        rr = rr_new
    return x
