"""The fusion metrics as batched tensor functions: [B, H, W] float64 gray 0..255 -> [B].

Every function takes the fused image `f` and, where the metric compares with the sources, the
infrared `a` and visible `b` images, all the same size. The `convention` switch changes only what
the two evaluators in use disagree on (see docs/metrics.md):

- `cddfuse` (default): the Python evaluator of the CDDFuse repository that most papers use.
- `matlab`: the classic MATLAB scripts: MI in bits, AG divided by (r-1)(c-1), SSIM averaged.

`fusion_metrics(...)` computes several at once and shares the intermediate results.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fusionlab.errors import ConfigError

CONVENTIONS = ("cddfuse", "matlab")
ALL_METRICS = (
    "EN",
    "SD",
    "SF",
    "AG",
    "MI",
    "SCD",
    "VIF",
    "Qabf",
    "SSIM",
    "SSIM255",
    "CC",
    "PSNR",
    "MSE",
    "Nabf",
)
# Metrics for which a smaller value is better (MSE: distance to the sources; Nabf: artifacts).
LOWER_IS_BETTER = frozenset({"MSE", "Nabf"})
# Metrics that need only the fused image.
NO_REFERENCE = frozenset({"EN", "SD", "SF", "AG"})


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown metric convention '{convention}'; choose one of {', '.join(CONVENTIONS)}")
    return convention


def check_metrics(metrics) -> tuple[str, ...]:
    """Normalise a metric selection (None = all), accepting any letter case."""
    if metrics is None:
        return ALL_METRICS
    if isinstance(metrics, str):
        metrics = [m for m in metrics.replace(",", " ").split() if m]
    lookup = {m.lower(): m for m in ALL_METRICS}
    out = []
    for m in metrics:
        key = lookup.get(str(m).lower())
        if key is None:
            raise ConfigError(f"unknown metric '{m}'; choose from {', '.join(ALL_METRICS)}")
        if key not in out:
            out.append(key)
    return tuple(out)


# ----------------------------------------------------------------- no-reference metrics


def entropy(f: torch.Tensor) -> torch.Tensor:
    """EN: Shannon entropy (bits) of the 256-bin gray histogram."""
    bsz, n = f.shape[0], f[0].numel()
    idx = f.reshape(bsz, -1).round().clamp(0, 255).long()
    idx = idx + 256 * torch.arange(bsz, device=f.device)[:, None]
    p = torch.bincount(idx.flatten(), minlength=256 * bsz).view(bsz, 256).double() / n
    return -(p * torch.log2(torch.where(p > 0, p, torch.ones_like(p)))).sum(1)


def std(f: torch.Tensor) -> torch.Tensor:
    """SD: population standard deviation."""
    return f.flatten(1).std(dim=1, correction=0)


def spatial_frequency(f: torch.Tensor) -> torch.Tensor:
    """SF: sqrt(mean(row differences^2) + mean(column differences^2)), forward differences."""
    dx = f[:, :, 1:] - f[:, :, :-1]
    dy = f[:, 1:, :] - f[:, :-1, :]
    return torch.sqrt(dx.square().mean((1, 2)) + dy.square().mean((1, 2)))


def _central_gradient(f: torch.Tensor, dim: int) -> torch.Tensor:
    """numpy/MATLAB `gradient`: central differences inside, one-sided at the two borders."""
    n = f.shape[dim]
    inner = (f.narrow(dim, 2, n - 2) - f.narrow(dim, 0, n - 2)) / 2
    first = f.narrow(dim, 1, 1) - f.narrow(dim, 0, 1)
    last = f.narrow(dim, n - 1, 1) - f.narrow(dim, n - 2, 1)
    return torch.cat([first, inner, last], dim=dim)


def average_gradient(f: torch.Tensor, convention: str = "cddfuse") -> torch.Tensor:
    """AG: mean of sqrt((Gx^2 + Gy^2) / 2); MATLAB divides the sum by (r-1)(c-1) instead."""
    g = torch.sqrt((_central_gradient(f, 2).square() + _central_gradient(f, 1).square()) / 2)
    if convention == "matlab":
        r, c = f.shape[1:]
        return g.sum((1, 2)) / ((r - 1) * (c - 1))
    return g.mean((1, 2))


# ----------------------------------------------------------------- statistics against the sources


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    y = y.flatten(1) - y.flatten(1).mean(1, keepdim=True)
    return (x * y).sum(1) / torch.sqrt(x.square().sum(1) * y.square().sum(1))


def correlation(f, a, b) -> torch.Tensor:
    """CC: mean of the Pearson correlations r(F, A) and r(F, B)."""
    return (_pearson(a, f) + _pearson(b, f)) / 2


def scd(f, a, b) -> torch.Tensor:
    """SCD: corr(F - B, A) + corr(F - A, B), the sum of the correlations of differences."""
    return _pearson(a, f - b) + _pearson(b, f - a)


def mse(f, a, b) -> torch.Tensor:
    """MSE: mean of MSE(F, A) and MSE(F, B)."""
    return ((a - f).square().mean((1, 2)) + (b - f).square().mean((1, 2))) / 2


def psnr(f, a, b, mse_value: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR: 10 log10(max(F)^2 / MSE), with the peak taken from the fused image as published."""
    m = mse(f, a, b) if mse_value is None else mse_value
    return 10 * torch.log10(f.flatten(1).amax(1).square() / m)


def _mutual_information(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MI in nats from the 256x256 joint histogram (one bincount for the whole batch)."""
    bsz, n = x.shape[0], x[0].numel()
    xi = x.reshape(bsz, -1).round().clamp(0, 255).long()
    yi = y.reshape(bsz, -1).round().clamp(0, 255).long()
    idx = xi * 256 + yi + 65536 * torch.arange(bsz, device=x.device)[:, None]
    joint = torch.bincount(idx.flatten(), minlength=65536 * bsz).view(bsz, 256, 256).double() / n
    px, py = joint.sum(2, keepdim=True), joint.sum(1, keepdim=True)
    ratio = joint / (px * py).clamp_min(1e-30)
    terms = torch.where(joint > 0, joint * torch.log(torch.where(joint > 0, ratio, torch.ones_like(ratio))), 0.0)
    return terms.sum((1, 2)).clamp_min(0)


def mutual_information(f, a, b, convention: str = "cddfuse") -> torch.Tensor:
    """MI: MI(F, A) + MI(F, B); nats for `cddfuse` (sklearn), bits for `matlab`."""
    mi = _mutual_information(f, a) + _mutual_information(f, b)
    return mi / math.log(2) if convention == "matlab" else mi


# ----------------------------------------------------------------- filtering


def _correlate_valid(x: torch.Tensor, weights, dim: int, stride: int = 1) -> torch.Tensor:
    """'valid' 1-D correlation along `dim` as a sum of shifted slices.

    On a CPU this beats conv2d by ~8x for single-channel float64 maps (conv2d has no fast
    float64 path), and it is exact for integer data when the weights are all 1.
    """
    n = len(weights)
    length = x.shape[dim] - n + 1
    out = x.narrow(dim, 0, length)
    if stride > 1:
        out = out.unfold(dim, 1, stride).squeeze(-1)
    if stride == 1 and all(w == 1 for w in weights):  # box sum: integer-exact, no multiplications
        out = torch.add(out, x.narrow(dim, 1, length))
        for k in range(2, n):
            out.add_(x.narrow(dim, k, length))
        return out
    out = out * weights[0]
    for k in range(1, n):
        part = x.narrow(dim, k, length)
        if stride > 1:
            part = part.unfold(dim, 1, stride).squeeze(-1)
        out.add_(part, alpha=weights[k])
    return out


def _filter2d_valid_direct(x: torch.Tensor, weights, stride: int = 1) -> torch.Tensor:
    return _correlate_valid(_correlate_valid(x, weights, -1, stride), weights, -2, stride)


def _filter2d_valid(x: torch.Tensor, weights, stride: int = 1, band_bytes: int = 1 << 20) -> torch.Tensor:
    """Separable 'valid' filtering of [..., H, W] with the same 1-D weights on both axes.

    Large inputs are processed map by map in bands of rows (~1 MiB each, a quarter of L2) so that the ~2n
    passes over the data hit the CPU cache instead of memory: about 2.5x faster on the dev box.
    """
    n = len(weights)
    h, w = x.shape[-2:]
    ho, wo = (h - n) // stride + 1, (w - n) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"a {n}-tap filter needs at least {n}x{n} pixels, got {w}x{h}")
    if x.device.type != "cpu" or x.numel() * x.element_size() <= 2 * band_bytes:
        return _filter2d_valid_direct(x, weights, stride)
    maps = x.reshape(-1, h, w)
    out = torch.empty((maps.shape[0], ho, wo), dtype=x.dtype)
    band = max(8, band_bytes // (w * x.element_size()))
    for m in range(maps.shape[0]):
        for r0 in range(0, ho, band):
            r1 = min(ho, r0 + band)
            out[m, r0:r1] = _filter2d_valid_direct(maps[m, r0 * stride : (r1 - 1) * stride + n], weights, stride)
    return out.reshape(*x.shape[:-2], ho, wo)


# ----------------------------------------------------------------- SSIM

_BOX7 = [1.0] * 7


class _SSIMStats:
    """7x7 window sums of F, A, B and their products, computed once for SSIM and SSIM255.

    Gray values are integers 0..255, so the window sums and the variance/covariance numerators
    n*sum(xy) - sum(x)*sum(y) are integers below 2^31: computed in int32 they are exact (no
    cancellation noise in flat regions, where the tiny data_range=2 constants are sensitive) and
    fast. SSIM is written on the sums directly (the 1/n factors cancel). Non-integer input falls
    back to float64.
    """

    n = 49

    def __init__(self, f, a, b):
        integer = _is_integer_valued(f, a, b)
        dtype = torch.int32 if integer else torch.float64
        fi, ai, bi = (t.to(dtype) for t in (f, a, b))
        stack = torch.stack([fi, ai, bi, fi * fi, ai * ai, bi * bi, fi * ai, fi * bi])
        sf, sa, sb, sff, saa, sbb, sfa, sfb = _filter2d_valid(stack, _BOX7).unbind(0)
        n = self.n
        sf2 = sf * sf
        out = torch.float32 if integer else torch.float64
        self.terms = {}
        for key, sx, sxx, sfx in (("a", sa, saa, sfa), ("b", sb, sbb, sfb)):
            p = sf * sx
            q = sf2 + sx * sx
            # n^2 * (2 mu_f mu_x), n^2 * (mu_f^2 + mu_x^2), n(n-1) * 2 cov, n(n-1) * (var_f + var_x)
            terms = (2 * p, q, 2 * (n * sfx - p), n * (sff + sxx) - q)
            self.terms[key] = tuple(t.to(out) for t in terms)

    def ssim(self, which: str, data_range: float) -> torch.Tensor:
        n = self.n
        k1 = (0.01 * data_range) ** 2 * n * n
        k2 = (0.03 * data_range) ** 2 * n * (n - 1)  # sample covariance, scikit-image's default
        mean_num, mean_den, cov_num, var_den = self.terms[which]
        s = ((mean_num + k1) * (cov_num + k2)) / ((mean_den + k1) * (var_den + k2))
        return s.double().mean((-2, -1))


def _is_integer_valued(*xs) -> bool:
    return all(bool((x == torch.round(x)).all()) and float(x.abs().max()) <= 255 for x in xs)


def ssim(f: torch.Tensor, a: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM like scikit-image's defaults: 7x7 uniform window, K1=0.01, K2=0.03, sample
    covariance, averaged over the windows that lie fully inside the image."""
    return _SSIMStats(f, a, a).ssim("a", data_range)


# ----------------------------------------------------------------- VIF


def _gauss_weights(n: int) -> list[float]:
    """1-D factor of MATLAB's fspecial('gaussian', n, n/5); the 2-D window is its outer product
    (normalising the outer product equals the outer product of the normalised factors)."""
    x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    g = torch.exp(-(x * x) / (2 * (n / 5.0) ** 2))
    return (g / g.sum()).tolist()


def _vif_terms(mu1, mu2, e11, s2, e12, eps: float, sigma_nsq: float):
    """Sums of the information terms of one scale, with the published eps guards.

    The published code clips variances at 0, zeroes g where s1 < eps, s2 < eps or g < 0, and
    floors sv at eps. Pixels with s1 < eps contribute to neither sum, pixels with s2 < eps or
    g < 0 only to the denominator; that is what the masks below express, in fewer passes.
    Returns natural-log sums; the ln 10 of the published log10 cancels in the ratio.
    """
    s1 = (e11 - mu1 * mu1).clamp_min_(0)
    s12 = e12 - mu1 * mu2
    has1 = s1 >= eps
    gain = s12.clamp_min(0).div_(s1 + eps)
    sv = (s2 - gain * s12).clamp_min_(eps).add_(sigma_nsq)
    # log(1 + x) rather than log1p: the same as the reference's log10(1 + x), and ~10x faster
    info = gain.square_().mul_(s1).div_(sv).add_(1).log_()
    info = torch.where(has1 & (s2 >= eps), info, 0.0)
    den = torch.where(has1, (s1 / sigma_nsq).add_(1).log_(), 0.0)
    return info.sum((-2, -1), dtype=torch.float64), den.sum((-2, -1), dtype=torch.float64)


def _check_vif_size(size) -> None:
    """The 4-scale pyramid with 'valid' filters needs at least 41 x 41 pixels."""
    from fusionlab.errors import DataError

    h, w = size
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        if scale > 1:
            h, w = (h - n + 2) // 2, (w - n + 2) // 2
        if h < n or w < n:
            raise DataError(
                f"VIF needs images of at least 41x41 pixels, got {size[1]}x{size[0]} (WxH); "
                "leave VIF out of the metric list for smaller images"
            )


def _vif_inputs(a, b, f) -> torch.Tensor:
    """The three images stacked for VIF, each minus its own mean, in float32 on the CPU.

    VIF sees only local variances and covariances, which a constant shift leaves unchanged.
    Centring shrinks the values that E[x^2] - mu^2 cancels, so float32 filtering (twice as fast
    as float64 on a CPU) stays within ~2e-5 relative of the float64 result on RoadScene.
    """
    imgs = torch.stack([a, b, f]).to(torch.float32 if a.device.type == "cpu" else torch.float64)
    return imgs - imgs.mean((-2, -1), keepdim=True)


def vif_pair(f, a, b, eps: float = 1e-10, sigma_nsq: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiscale pixel-domain VIF of Sheikh & Bovik (4 scales) for A -> F and B -> F.

    Gaussian windows N = 2^(5-s)+1, sigma = N/5, 'valid' filtering, downsampling by 2, and the
    eps guards of the published code. Both sources share the statistics of F.
    """
    _check_vif_size(f.shape[-2:])
    imgs = _vif_inputs(a, b, f)  # [3, B, H, W]
    num = torch.zeros(2, f.shape[0], dtype=torch.float64, device=f.device)
    den = torch.zeros_like(num)
    for scale in range(1, 5):
        w = _gauss_weights(2 ** (5 - scale) + 1)
        if scale > 1:
            imgs = _filter2d_valid(imgs, w, stride=2)
        stack = torch.empty((8, *imgs.shape[1:]), dtype=imgs.dtype, device=imgs.device)
        stack[:3] = imgs
        ia, ib, i_f = imgs.unbind(0)
        for k, (x, y) in enumerate(((ia, ia), (ib, ib), (i_f, i_f), (ia, i_f), (ib, i_f)), start=3):
            torch.mul(x, y, out=stack[k])
        mu_a, mu_b, mu_f, e_aa, e_bb, e_ff, e_af, e_bf = _filter2d_valid(stack, w).unbind(0)
        s2 = (e_ff - mu_f * mu_f).clamp_min_(0)  # the fused image's variance serves both sources
        n_a, d_a = _vif_terms(mu_a, mu_f, e_aa, s2, e_af, eps, sigma_nsq)
        n_b, d_b = _vif_terms(mu_b, mu_f, e_bb, s2, e_bf, eps, sigma_nsq)
        num += torch.stack([n_a, n_b])
        den += torch.stack([d_a, d_b])
    v = num / den
    v = torch.where(torch.isnan(v), 1.0, v)  # both sources flat: defined as 1 by the published code
    return v[0], v[1]


def vif(f, a, b) -> torch.Tensor:
    """VIF(A -> F) + VIF(B -> F). Sheikh & Bovik's VIF (often mislabelled VIFF)."""
    va, vb = vif_pair(f, a, b)
    return va + vb


# ----------------------------------------------------------------- Qabf and Nabf


def _sobel(x: torch.Tensor, padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel responses (d/dx, d/dy) as scipy's convolve2d(x, kernel, 'same') would give them:
    true convolution, so gx = left - right and gy = bottom - top. padding: 'zeros' or 'replicate'."""
    p = F.pad(x[:, None], (1, 1, 1, 1), mode="constant" if padding == "zeros" else "replicate")[:, 0]
    smooth_v = p[:, :-2, :] + 2 * p[:, 1:-1, :] + p[:, 2:, :]  # [1,2,1] down the rows
    smooth_h = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]  # [1,2,1] along the columns
    gx = smooth_v[:, :, :-2] - smooth_v[:, :, 2:]
    gy = smooth_h[:, 2:, :] - smooth_h[:, :-2, :]
    return gx, gy


def _edge_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 suffices for the gradient metrics (Sobel of 0..255 integers is exact in float32 and
    the final ratios need ~1e-6 relative accuracy) and makes atan/exp twice as fast."""
    return torch.float32 if x.device.type == "cpu" else x.dtype


def _qabf_edges(x: torch.Tensor):
    gx, gy = _sobel(x.to(_edge_dtype(x)), "zeros")
    g = torch.sqrt(gx * gx + gy * gy)
    zero = gx == 0
    angle = torch.where(zero, math.pi / 2, torch.atan(gy / torch.where(zero, 1.0, gx)))
    return g, angle


def _min_over_max(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min(x, y) / max(x, y) for gradient magnitudes (>= 0), 0 where both are 0: one division
    instead of two selected ones."""
    return torch.minimum(x, y).div_(torch.maximum(x, y).clamp_min_(1e-30))


def _qabf_preservation(ga, aa, gf, af):
    # Strength ratio min/max; where the two are equal the published code takes gF itself.
    ratio = torch.where(ga == gf, gf, _min_over_max(ga, gf))
    orient = 1 - torch.abs(aa - af) / (math.pi / 2)
    qg = 0.9994 / (1 + torch.exp(-15 * (ratio - 0.5)))
    qa = 0.9879 / (1 + torch.exp(-22 * (orient - 0.8)))
    return qg * qa


def qabf(f, a, b, edges_f=None) -> torch.Tensor:
    """Qabf (Xydeas & Petrovic): gradient-weighted edge preservation from A and B into F."""
    ga, aa = _qabf_edges(a)
    gb, ab = _qabf_edges(b)
    gf, af = edges_f if edges_f is not None else _qabf_edges(f)
    qaf = _qabf_preservation(ga, aa, gf, af)
    qbf = _qabf_preservation(gb, ab, gf, af)
    num = (qaf * ga + qbf * gb).double().sum((1, 2))
    return num / (ga.double() + gb.double()).sum((1, 2))


def _nabf_edges(x: torch.Tensor):
    gv, gh = _sobel(x.to(_edge_dtype(x)), "replicate")  # MATLAB imfilter(x, fspecial('sobel')[']), 'replicate'
    gh = -gh  # fspecial('sobel') correlates top - bottom
    g = torch.sqrt(gv * gv + gh * gh)
    both0 = g == 0  # the same as gv == 0 and gh == 0, in one comparison
    angle = torch.atan(gv / torch.where(both0, 1.0, gh))  # gh == 0 -> +-inf -> +-pi/2, as MATLAB
    return g, torch.where(both0, 0.0, angle)


def _nabf_preservation(ga, aa, gf, af):
    ratio = _min_over_max(ga, gf)  # 0 where either gradient is 0, as published
    orient = torch.abs(torch.abs(aa - af) - math.pi / 2) * 2 / math.pi
    qg = 0.9999 / (1 + torch.exp(-19 * (ratio - 0.5)))
    qa = 0.9995 / (1 + torch.exp(-22 * (orient - 0.5)))
    return torch.sqrt(qg * qa)


def nabf(f, a, b) -> torch.Tensor:
    """Nabf: Petrovic-Xydeas fusion artifacts, as modified by Shreyamsha Kumar (lower is better).

    Td=2, wt_min=0.001, L=1.5; counts (1-Q) weighted by edge strength where F's gradient exceeds
    both sources' gradients, i.e. where fusion created edges that are in neither input.
    """
    ga, aa = _nabf_edges(a)
    gb, ab = _nabf_edges(b)
    gf, af = _nabf_edges(f)
    qaf = _nabf_preservation(ga, aa, gf, af)
    qbf = _nabf_preservation(gb, ab, gf, af)
    wa = torch.where(ga >= 2, ga * ga.sqrt(), 0.001)  # g^1.5; pow is ~10x slower than sqrt
    wb = torch.where(gb >= 2, gb * gb.sqrt(), 0.001)
    artifact = (gf > ga) & (gf > gb)
    num = torch.where(artifact, (1 - qaf) * wa + (1 - qbf) * wb, 0.0).double().sum((1, 2))
    return num / (wa.double() + wb.double()).sum((1, 2))


# ----------------------------------------------------------------- all at once


def fusion_metrics(f, a, b, convention: str = "cddfuse", metrics=None) -> dict[str, torch.Tensor]:
    """Selected metrics of a batch of gray float64 images [B, H, W] (0..255); each value is [B].

    a = infrared, b = visible, f = fused. Intermediate results shared between metrics are computed
    once.
    """
    check_convention(convention)
    names = check_metrics(metrics)
    if not (f.shape == a.shape == b.shape):
        raise ValueError(f"image sizes differ: fused {tuple(f.shape)}, ir {tuple(a.shape)}, vi {tuple(b.shape)}")
    f, a, b = (t.double() for t in (f, a, b))
    out: dict[str, torch.Tensor] = {}
    ssim_stats = None
    for name in names:
        if name == "EN":
            out[name] = entropy(f)
        elif name == "SD":
            out[name] = std(f)
        elif name == "SF":
            out[name] = spatial_frequency(f)
        elif name == "AG":
            out[name] = average_gradient(f, convention)
        elif name == "MI":
            out[name] = mutual_information(f, a, b, convention)
        elif name == "SCD":
            out[name] = scd(f, a, b)
        elif name == "VIF":
            out[name] = vif(f, a, b)
        elif name == "Qabf":
            out[name] = qabf(f, a, b)
        elif name in ("SSIM", "SSIM255"):
            if ssim_stats is None:
                ssim_stats = _SSIMStats(f, a, b)
            data_range = 255.0 if name == "SSIM255" else (2.0 if convention == "cddfuse" else 255.0)
            s = ssim_stats.ssim("a", data_range) + ssim_stats.ssim("b", data_range)
            out[name] = s / 2 if convention == "matlab" else s
        elif name == "CC":
            out[name] = correlation(f, a, b)
        elif name == "MSE":
            out[name] = mse(f, a, b)
        elif name == "PSNR":
            out[name] = psnr(f, a, b, out.get("MSE"))
        elif name == "Nabf":
            out[name] = nabf(f, a, b)
    return out
