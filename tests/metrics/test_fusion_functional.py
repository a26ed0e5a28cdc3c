"""Known values, independent cross-checks, symmetry/invariance and fused == source edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusionlab.errors import ConfigError, DataError
from fusionlab.metrics import functional as M
from fusionlab.metrics.gray import rgb_to_gray255, to_gray255

REFERENCE_METRICS = ("MI", "SCD", "VIF", "Qabf", "SSIM", "SSIM255", "CC", "PSNR", "MSE", "Nabf")


def _img(rows):
    return torch.tensor(rows, dtype=torch.float64)[None]


# ----------------------------------------------------------------- gray conversion


def test_gray_matches_opencv_bit_for_bit():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # include exact .5 ties: 299R + 587G + 114B = 1000k + 500
    rgb[0, :4] = [[0, 0, 0], [255, 255, 255], [50, 0, 50], [10, 100, 200]]
    expected = np.round(cv2.cvtColor(rgb[..., ::-1].astype(np.float32), cv2.COLOR_BGR2GRAY))
    ours = rgb_to_gray255(torch.from_numpy(rgb).permute(2, 0, 1).double())
    assert np.array_equal(ours.numpy(), expected)


def test_gray_known_values_and_ranges():
    red = torch.zeros(3, 2, 2)
    red[0] = 1.0  # float RGB in 0..1 -> 8 bit -> 0.299 * 255 = 76.245 -> 76
    assert to_gray255(red)[0, 0, 0].item() == 76
    assert to_gray255(np.full((2, 2), 200, np.uint8))[0, 0, 0].item() == 200
    assert to_gray255(np.full((2, 2), 200.0), value_range=255)[0, 0, 0].item() == 200
    with pytest.raises(DataError, match="value_range=255"):
        to_gray255(np.full((2, 2), 200.0))
    with pytest.raises(DataError, match="not gray or RGB"):
        to_gray255(torch.zeros(2, 2, 2, 2))


# ----------------------------------------------------------------- no-reference metrics


def test_entropy_known_values():
    half = _img([[0, 0, 255, 255]] * 4)
    assert M.entropy(half).item() == pytest.approx(1.0)
    assert M.entropy(_img([[7] * 4] * 4)).item() == 0.0
    four = _img([[0, 1, 2, 3]] * 4)
    assert M.entropy(four).item() == pytest.approx(2.0)


def test_sd_sf_ag_on_a_ramp():
    ramp = torch.arange(6, dtype=torch.float64).repeat(5, 1)[None]  # f[i, j] = j, 5 x 6
    assert M.std(ramp).item() == pytest.approx(np.std(np.arange(6)))
    assert M.spatial_frequency(ramp).item() == pytest.approx(1.0)  # dx = 1, dy = 0
    assert M.average_gradient(ramp).item() == pytest.approx(math.sqrt(0.5))
    assert M.average_gradient(ramp, "matlab").item() == pytest.approx(30 * math.sqrt(0.5) / (4 * 5))


def test_mi_matches_sklearn_and_units(triple):
    sk = pytest.importorskip("sklearn.metrics")
    ir, vi, fused = triple
    expected = sk.mutual_info_score(fused.flatten().numpy(), ir.flatten().numpy()) + sk.mutual_info_score(
        fused.flatten().numpy(), vi.flatten().numpy()
    )
    assert M.mutual_information(fused, ir, vi).item() == pytest.approx(expected, rel=1e-10)
    assert M.mutual_information(fused, ir, vi, "matlab").item() == pytest.approx(expected / math.log(2), rel=1e-10)


def test_ssim_matches_scikit_image(triple):
    skm = pytest.importorskip("skimage.metrics")
    ir, vi, fused = triple
    for data_range in (2.0, 255.0):
        expected = sum(
            skm.structural_similarity(fused[0].numpy(), x[0].numpy(), data_range=data_range) for x in (ir, vi)
        )
        got = M.fusion_metrics(fused, ir, vi, metrics=["SSIM" if data_range == 2 else "SSIM255"])
        assert next(iter(got.values())).item() == pytest.approx(expected, rel=1e-6)  # float32 final formula


def test_separable_gaussian_filter_equals_2d_convolution(triple):
    ir = triple[0]
    w = M._gauss_weights(9)
    kernel = torch.outer(torch.tensor(w, dtype=torch.float64), torch.tensor(w, dtype=torch.float64))
    full = torch.nn.functional.conv2d(ir[:, None], kernel[None, None])[:, 0]
    assert torch.allclose(M._filter2d_valid(ir, w), full, rtol=1e-12, atol=1e-9)
    assert torch.allclose(M._filter2d_valid(ir, w, stride=2), full[:, ::2, ::2], rtol=1e-12, atol=1e-9)


# ----------------------------------------------------------------- fused == source edge cases


def test_fused_equal_to_ir(triple):
    ir, vi, _ = triple
    m = M.fusion_metrics(ir, ir, vi)
    h_ir = M.entropy(ir).item() * math.log(2)  # MI(A, A) = H(A), in nats
    assert m["MI"].item() == pytest.approx(h_ir + M._mutual_information(ir, vi).item(), rel=1e-9)
    mse_iv = (ir - vi).square().mean().item()
    assert m["MSE"].item() == pytest.approx(mse_iv / 2)
    assert m["PSNR"].item() == pytest.approx(10 * math.log10(ir.max().item() ** 2 / (mse_iv / 2)))
    assert m["CC"].item() == pytest.approx((1 + M._pearson(ir, vi).item()) / 2)
    assert m["SSIM255"].item() == pytest.approx(1 + M.ssim(ir, vi, 255.0).item())
    va, _ = M.vif_pair(ir, ir, vi)
    assert va.item() == pytest.approx(1.0, abs=1e-6)  # perfect fidelity to the IR image
    assert m["Nabf"].item() == 0.0  # F never has a stronger edge than A


def test_everything_constant_is_finite():
    flat = torch.full((1, 41, 41), 90.0, dtype=torch.float64)
    m = M.fusion_metrics(flat, flat, flat, metrics=["EN", "SD", "SF", "AG", "VIF", "SSIM", "MSE"])
    assert m["EN"].item() == 0 and m["SD"].item() == 0 and m["SF"].item() == 0 and m["AG"].item() == 0
    assert m["VIF"].item() == 2.0  # 0/0 per source is defined as 1 by the published code
    assert m["SSIM"].item() == pytest.approx(2.0)
    assert m["MSE"].item() == 0.0


def test_qabf_known_value_on_a_step_edge():
    img = torch.zeros(1, 12, 12, dtype=torch.float64)
    img[:, :, 6:] = 100.0
    # F == A == B: equal strengths take gF itself (the published quirk), so Qg = 0.9994 / (1 + e^(-15 (g - .5)))
    # ~ 0.9994 where g >= 100; orientations agree, so Qa = 0.9879 / (1 + e^(-22 * 0.2)).
    ga, _ = M._qabf_edges(img)
    qg = 0.9994 / (1 + torch.exp(-15 * (ga.double() - 0.5)))
    qa = 0.9879 / (1 + math.exp(-22 * 0.2))
    expected = ((qg * qa * ga).sum() / ga.sum()).item()
    assert M.qabf(img, img, img).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.9994 * qa, rel=1e-6)


def test_nabf_counts_new_edges():
    a = torch.zeros(1, 16, 16, dtype=torch.float64)
    a[:, :, 8:] = 60.0
    b = a.clone()
    f = a.clone()
    f[:, 8:, :] += 80.0  # a horizontal edge in F that neither source has
    assert M.nabf(f, a, b).item() > 0.01
    assert M.nabf(a, a, b).item() == 0.0


# ----------------------------------------------------------------- properties


def test_reference_metrics_are_symmetric_in_the_sources(triple):
    ir, vi, fused = triple
    m1 = M.fusion_metrics(fused, ir, vi, metrics=REFERENCE_METRICS)
    m2 = M.fusion_metrics(fused, vi, ir, metrics=REFERENCE_METRICS)
    for name in REFERENCE_METRICS:
        assert m1[name].item() == pytest.approx(m2[name].item(), rel=1e-9), name


def test_invariance_under_horizontal_flip(triple):
    names = ("EN", "SD", "SF", "AG", "MI", "SCD", "SSIM", "SSIM255", "CC", "PSNR", "MSE")
    m1 = M.fusion_metrics(*reversed(triple), metrics=names)
    m2 = M.fusion_metrics(*(t.flip(-1) for t in reversed(triple)), metrics=names)
    for name in names:
        assert m1[name].item() == pytest.approx(m2[name].item(), rel=1e-9), name


def test_brightness_shift_leaves_shape_statistics_alone(triple):
    ir, vi, fused = triple
    dark = (fused * 0.8).round()
    names = ("EN", "SD", "SF", "AG", "SCD", "CC")
    m1 = M.fusion_metrics(dark, ir, vi, metrics=names)
    m2 = M.fusion_metrics(dark + 20, ir, vi, metrics=names)
    for name in names:
        assert m1[name].item() == pytest.approx(m2[name].item(), rel=1e-9), name


def test_batch_equals_single_images(triple):
    ir, vi, fused = triple
    ir2, vi2, fused2 = (t.flip(-2) for t in (vi, ir, fused))
    batch = M.fusion_metrics(torch.cat([fused, fused2]), torch.cat([ir, ir2]), torch.cat([vi, vi2]))
    one = M.fusion_metrics(fused2, ir2, vi2)
    for name, v in batch.items():
        assert v[1].item() == pytest.approx(one[name].item(), rel=1e-9), name


def test_conventions_differ_only_where_documented(triple):
    ir, vi, fused = triple
    c = M.fusion_metrics(fused, ir, vi, "cddfuse")
    m = M.fusion_metrics(fused, ir, vi, "matlab")
    assert m["MI"].item() == pytest.approx(c["MI"].item() / math.log(2))
    assert m["SSIM"].item() == pytest.approx(c["SSIM255"].item() / 2)
    r, col = ir.shape[1:]
    assert m["AG"].item() == pytest.approx(c["AG"].item() * r * col / ((r - 1) * (col - 1)))
    for name in ("EN", "SD", "SF", "SCD", "VIF", "Qabf", "CC", "PSNR", "MSE", "Nabf"):
        assert m[name].item() == c[name].item(), name


def test_bad_names_and_sizes():
    with pytest.raises(ConfigError, match="unknown metric 'FOO'"):
        M.check_metrics(["EN", "FOO"])
    assert M.check_metrics("en, qabf") == ("EN", "Qabf")
    with pytest.raises(ConfigError, match="convention"):
        M.check_convention("octave")
    with pytest.raises(ValueError, match="sizes differ"):
        M.fusion_metrics(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
    assert M.LOWER_IS_BETTER == {"MSE", "Nabf"}


def test_vif_rejects_images_too_small_for_its_pyramid():
    small = torch.zeros(1, 40, 60, dtype=torch.float64)
    with pytest.raises(DataError, match="at least 41x41"):
        M.vif(small, small, small)
    ok = torch.rand(1, 41, 41, dtype=torch.float64) * 255
    assert torch.isfinite(M.vif(ok, ok, ok)).all()


@pytest.mark.parametrize("stride", [1, 2])
def test_banded_filtering_equals_direct(stride):
    x = torch.rand(3, 2, 70, 90, dtype=torch.float64) * 255
    w = M._gauss_weights(9)
    banded = M._filter2d_valid(x, w, stride=stride, band_bytes=4096)  # forces many small bands
    assert torch.equal(banded, M._filter2d_valid_direct(x, w, stride))
    boxed = M._filter2d_valid(x.round().to(torch.int32), M._BOX7, band_bytes=4096)
    assert torch.equal(boxed, M._filter2d_valid_direct(x.round().to(torch.int32), M._BOX7))
