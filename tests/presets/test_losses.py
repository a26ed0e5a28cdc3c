"""Equation-level checks of the preset losses against small examples computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.fidelity


def test_mci_hand_example():
    from fusionlab.presets.ldnf.objective import mci_loss

    ir = torch.tensor([0.2, 0.8]).view(1, 1, 1, 2)
    vi = torch.tensor([[0.5, 0.1], [0.1, 0.9], [0.3, 0.3]]).view(1, 3, 1, 2)
    fused = torch.full((1, 3, 1, 2), 0.5)
    # targets max(ir, vi^i): R [0.5, 0.8], G [0.2, 0.9], B [0.3, 0.8]
    # |F - target| summed over channels: pixel 1: 0 + 0.3 + 0.2 = 0.5, pixel 2: 0.3 + 0.4 + 0.3 = 1.0
    assert float(mci_loss(fused, ir, vi)) == pytest.approx(0.75)
    assert float(mci_loss(torch.maximum(ir.expand_as(vi), vi), ir, vi)) == 0.0


def test_mcg_hand_example():
    from fusionlab.presets.ldnf.objective import mcg_loss

    # VIS channel c is a horizontal ramp a_c * column over 4 columns. Unnormalised Sobel with
    # replicated borders: 8 a inside, 4 a at the two edge columns -> mean |∇| = 6 a per channel.
    slopes = torch.tensor([0.1, 0.2, 0.3])
    cols = torch.arange(4, dtype=torch.float)
    vi = (slopes.view(3, 1, 1) * cols.view(1, 1, 4)).expand(3, 3, 4).unsqueeze(0).contiguous()
    ir = torch.full((1, 1, 3, 4), 0.5)
    flat = torch.full((1, 3, 3, 4), 0.2)
    assert float(mcg_loss(flat, ir, vi)) == pytest.approx(6 * float(slopes.sum()), rel=1e-5)
    assert float(mcg_loss(vi, ir, vi)) == pytest.approx(0.0, abs=1e-6)


def test_direction_loss_eq3_hand_example():
    from fusionlab.presets.ldfusion.language import direction_loss

    txt_f, txt_ir, txt_vs = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, -1.0])
    img_f, img_ir, img_vs = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    # ΔV_vs = (1,1), ΔV_ir = (1,-1); ΔṼ_vs = (0,-1) -> cos = -1/√2; ΔṼ_ir = (1,-1) -> cos = 1
    expected = 1 - 0.5 * (-1 / math.sqrt(2) + 1)
    assert float(direction_loss(img_f, img_ir, img_vs, txt_f, txt_ir, txt_vs)) == pytest.approx(expected)


def test_regulariser_phi_eq7_hand_example():
    from fusionlab.presets.ldfusion.language import direction_regulariser

    img_f, img_ir, img_vs = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    # |1 - cos(f, vs)| + |1 - cos(f, ir)| = (1 - 1/√2) + (1 - 0)
    assert float(direction_regulariser(img_f, img_ir, img_vs)) == pytest.approx(2 - 1 / math.sqrt(2))


def test_entropy_and_patch_filter():
    from fusionlab.presets.ldfusion.language import image_entropy, informative

    two_levels = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    four_levels = torch.tensor([0, 85, 170, 255], dtype=torch.float).view(1, 1, 2, 2) / 255
    all_levels = (torch.arange(256, dtype=torch.float) / 255).view(1, 1, 16, 16)
    assert float(image_entropy(two_levels)) == pytest.approx(1.0)
    assert float(image_entropy(four_levels)) == pytest.approx(2.0)
    assert float(image_entropy(all_levels)) == pytest.approx(8.0)
    flat = torch.full((1, 1, 16, 16), 0.3)
    ir, vi = torch.cat([all_levels, flat, flat, all_levels]), torch.cat([flat, all_levels, flat, all_levels])
    # default (the authors' trainer): both sources must carry >= σ = 6 bits
    assert informative(ir, vi, sigma=6.0).tolist() == [False, False, False, True]
    # the other reading of "patches where the source images are with little information"
    assert informative(ir, vi, sigma=6.0, rule="any").tolist() == [True, True, False, True]


def test_language_loss_drops_flat_patches_and_scales_sizes():
    from fusionlab.presets.ldfusion.language import LanguageLoss, patch_size_range

    assert patch_size_range(480, 640) == (112, 180)
    assert patch_size_range(112, 200) == (56, 90)   # half the 224 px reference
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    prompts = {"ir": torch.randn(4), "vis": torch.randn(4), "fused": torch.randn(4)}
    loss = LanguageLoss(encoder, prompts, n_patches=3, min_entropy=6.0, patch_rule="any")
    flat = torch.full((2, 1, 40, 40), 0.5)
    out = loss(flat.clone().requires_grad_(), flat, flat)
    assert float(out["patches_kept"]) == 0  # nothing informative: whole-image term only
    textured = torch.rand(2, 1, 40, 40)
    fused = torch.rand(2, 1, 40, 40, requires_grad=True)
    out = loss(fused, textured, textured)
    assert float(out["patches_kept"]) == 6
    out["total"].backward()
    assert fused.grad is not None and fused.grad.abs().sum() > 0


def test_saliency_weights_hand_example():
    from fusionlab.presets.text2pixels.objective import saliency_map, saliency_weights

    x = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)   # H(0) = H(255) = 1/2
    y = torch.tensor([0.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)   # H(0) = 3/4, H(255) = 1/4
    # S_x = 127.5 everywhere; S_y(0) = 1/4 * 255 = 63.75, S_y(255) = 3/4 * 255 = 191.25
    assert saliency_map(x).flatten().tolist() == pytest.approx([127.5] * 4)
    assert saliency_map(y).flatten().tolist() == pytest.approx([63.75, 63.75, 63.75, 191.25])
    # as printed: ω₁ = S_x / |S_x - S_y| = 127.5 / 63.75 = 2 everywhere, ω₂ = 1 - ω₁ = -1
    w1, w2 = saliency_weights(x, y)
    assert w1.flatten().tolist() == pytest.approx([2.0] * 4) and w2.flatten().tolist() == pytest.approx([-1.0] * 4)
    # where the saliencies agree the printed form is unbounded: |S_x - S_y| is floored at one grey level
    assert saliency_weights(x, x)[0].flatten().tolist() == pytest.approx([127.5] * 4)
    # fusionlab's normalised reading: S_x / (S_x + S_y)
    w1, w2 = saliency_weights(x, y, "normalised")
    assert w1.flatten().tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 0.4], rel=1e-5)
    assert (w1 + w2).flatten().tolist() == pytest.approx([1.0] * 4)


def test_content_consistency_compares_with_the_weighted_sources_eq9():
    import kornia

    from fusionlab.losses.gradient import sobel_magnitude
    from fusionlab.presets.text2pixels.objective import content_consistency_loss, saliency_weights

    # flat images: z = 0.5, I₁ = 1, I₂ = 0, equal saliency -> normalised ω₁ = ω₂ = 1/2, so the targets
    # are ω₁I₁ = 0.5 (matched: no loss) and ω₂I₂ = 0: pixel term |0.5 - 0| = 0.5, gradient terms 0, and
    # SSIM of two constants μ = 0.5, 0 is (2·0.5·0 + C1) / (0.25 + 0 + C1) with C1 = 0.01²
    z, a, b = torch.full((1, 1, 11, 11), 0.5), torch.ones(1, 1, 11, 11), torch.zeros(1, 1, 11, 11)
    c1 = 0.01 ** 2
    assert float(content_consistency_loss(z, a, b, "normalised")) == pytest.approx(0.5 + 1 - c1 / (0.25 + c1), abs=1e-5)
    torch.manual_seed(0)
    ir, vi = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    for rule in ("printed", "normalised"):
        w1, w2 = saliency_weights(ir, vi, rule)
        z = w1 * ir  # matches the first target exactly: only the term against ω₂·I₂ is left
        t2 = w2 * vi
        by_hand = (1 - kornia.metrics.ssim(z, t2, 11).mean()) + (z - t2).abs().mean() \
            + (sobel_magnitude(z) - sobel_magnitude(t2)).abs().mean()
        assert float(content_consistency_loss(z, ir, vi, rule)) == pytest.approx(float(by_hand), rel=1e-5), rule


def test_codebook_loss_and_quantisation_hand_example():
    from fusionlab.losses.codebook import codebook_loss
    from fusionlab.models.fusion.codebook import Codebook

    book = Codebook(num_codes=2, dim=2)
    with torch.no_grad():
        book.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    z = torch.tensor([[0.9, 0.0], [0.0, 2.0]])
    q, index = book.quantise(z)
    # d(z1) = (0.81, 1.01) -> code 0; d(z2) = (4, 2) -> code 1
    assert index.tolist() == [0, 1]
    assert float(codebook_loss(z, q)) == pytest.approx((0.81 + 2.0) / 2)
    zmap = z.t().reshape(1, 2, 1, 2).clone().requires_grad_()    # the same two vectors as a [1,2,1,2] map
    quantised, g, _ = book(zmap)
    assert float(g) == pytest.approx(1.405)
    assert torch.allclose(quantised, q.t().reshape(1, 2, 1, 2))
    quantised.sum().backward()  # straight-through: d(quantised)/d(z) is the identity
    assert torch.equal(zmap.grad, torch.ones_like(zmap))


def test_structure_loss_and_alpha_weights():
    from fusionlab.presets.text2pixels.objective import alpha_weights, structure_loss

    torch.manual_seed(0)
    z = torch.rand(1, 1, 24, 24)
    assert float(structure_loss(z, z)) == pytest.approx(0.0, abs=1e-5)
    assert float(structure_loss(z, z.flip(-1))) > 0.1
    a1, a2 = alpha_weights(z, None, z, z)
    assert float(a1) == 0.0 and float(a2) == pytest.approx(1.0, abs=1e-4)  # SSIM(z, z) = 1
    a1, _ = alpha_weights(z, z, z, torch.rand(1, 1, 24, 24))
    assert 0.0 < float(a1) < 1.0
    # α₂ = mean SSIM(z, {x, y}) as is (eq. 10); the floor is fusionlab's opt-in switch
    flat = torch.full((1, 1, 24, 24), 0.5)
    _, a2 = alpha_weights(flat, None, z, z)
    assert float(a2) < 0.1
    assert float(alpha_weights(flat, None, z, z, floor=0.1)[1]) == pytest.approx(0.1)


def test_tgif_loss_weights_gradient_by_20():
    from fusionlab.presets.tgif.objective import tgif_loss

    torch.manual_seed(0)
    ir, y, f = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    parts = tgif_loss(f, ir, y)
    assert float(parts["total"]) == pytest.approx(float(parts["int"] + 20 * parts["grad"]))
    assert float(tgif_loss(torch.maximum(ir, y), ir, y)["int"]) == 0.0


def test_depth_loss_targets_gt_where_valid_else_source_depth():
    from fusionlab.presets.ldnf.objective import DepthDrivenLoss

    class Const(torch.nn.Module):  # "depth" = 1 + mean intensity, so it depends on the image
        def forward(self, x):
            return 1 + x.mean(1, keepdim=True)

    loss = DepthDrivenLoss(Const(), Const())
    gt = torch.tensor([0.0, 5.0]).view(1, 1, 1, 2)
    from_source = torch.tensor([2.0, 3.0]).view(1, 1, 1, 2)
    assert DepthDrivenLoss.targets(gt, from_source).flatten().tolist() == [2.0, 5.0]
    assert DepthDrivenLoss.targets(None, from_source) is from_source
    ir, vi = torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 8)
    same = loss(vi.mean(1, keepdim=True).expand(-1, 3, -1, -1), ir, vi)   # no GT: compares with the sources
    assert float(same["depth_vis"]) == pytest.approx(0.0, abs=1e-6)
    fused = torch.rand(1, 3, 8, 8, requires_grad=True)
    out = loss(fused, ir, vi, gt_depth=torch.full((1, 1, 8, 8), 7.0))
    out["total"].backward()
    assert float(out["total"]) > 0 and fused.grad.abs().sum() > 0


def test_feature_fidelity_vgg_layers_and_local_weights(tmp_path):
    from safetensors.torch import save_file

    from fusionlab.losses.perceptual import FeatureFidelityLoss, VGGFeatures

    vgg = VGGFeatures(None, (3, 5, 10))
    x = torch.rand(1, 1, 32, 32)
    channels = [f.shape[1] for f in vgg(x)]
    assert channels == [128, 256, 512]  # conv2_1, conv3_1, conv4_2
    assert vgg.taps == [6, 11, 22] and len(vgg.trunk) == 23
    save_file({k: v.contiguous() for k, v in vgg.trunk.state_dict().items()}, str(tmp_path / "vgg.safetensors"))
    # a local file is loaded (a features-only state dict of the truncated trunk is accepted as well)
    reloaded = FeatureFidelityLoss(str(tmp_path / "vgg.safetensors"))
    assert torch.equal(reloaded.vgg.trunk[0].weight, vgg.trunk[0].weight)
    ir, vi = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    assert float(reloaded(torch.maximum(ir, vi), ir, vi)) >= 0
