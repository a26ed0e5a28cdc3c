"""The papers' ablation switches change what they should: `text_guidance` (every preset) and
`depth_loss` (ldnf), in the networks and in the stage's training objective."""

from __future__ import annotations

import pytest
import torch

from fusionlab.models.fusion import build_fusion_model

TINY = {
    "ldnf": {"features": "conv", "width": 8, "n_blocks": 2, "film_hidden": 16, "text_dim": 12},
    "text2pixels": {"width": 8, "paths": 2, "heads": 2, "token_dim": 10, "num_codes": 8},
    "tgif": {"dim": 8, "heads": 2, "encoder_blocks": 1, "decoder_blocks": 1, "token_dim": 10},
}


def _text(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"pooled": torch.randn(2, 12, generator=g), "tokens": torch.randn(2, 5, 10, generator=g),
            "mask": torch.tensor([[True] * 5, [True, True, False, False, False]])}


def _randomise(net: torch.nn.Module) -> None:
    """Zero-initialised output layers make a fresh net ignore everything; perturb all weights."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)


@pytest.mark.parametrize("preset", sorted(TINY))
def test_text_guidance_switch_in_networks(preset):
    ir, vi = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    on = build_fusion_model({"name": preset, **TINY[preset], "text_guidance": True})
    off = build_fusion_model({"name": preset, **TINY[preset], "text_guidance": False})
    assert on.needs_text and not off.needs_text
    assert sum(p.numel() for p in off.parameters()) < sum(p.numel() for p in on.parameters())
    _randomise(on)
    _randomise(off)
    with torch.no_grad():
        assert not torch.allclose(on(ir, vi, _text(0)), on(ir, vi, _text(1)))   # text steers the fusion
        assert torch.equal(off(ir, vi, _text(0)), off(ir, vi, _text(1)))         # ...or is ignored
        assert torch.equal(off(ir, vi, None), off(ir, vi, _text(0)))
        out = on(ir, vi, _text(0))
    assert out.shape == (2, on.out_channels, 16, 16) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_ldnf_film_identity_when_untrained_and_formula():
    from fusionlab.models.fusion.film import TextFiLM, film

    feats = torch.randn(2, 3, 4, 4)
    sigma, mu = torch.tensor([[0.5, 0.0, -1.0]] * 2), torch.tensor([[1.0, 2.0, 0.0]] * 2)
    out = film(feats, sigma, mu)
    assert torch.allclose(out[:, 0], 1.5 * feats[:, 0] + 1.0)
    assert torch.allclose(out[:, 1], feats[:, 1] + 2.0)
    assert torch.allclose(out[:, 2], torch.zeros_like(out[:, 2]))
    params = TextFiLM(12, [3, 5])(torch.randn(2, 12))
    assert [(s.shape, m.shape) for s, m in params] == [((2, 3), (2, 3)), ((2, 5), (2, 5))]
    assert all(float(s.abs().sum()) == 0 and float(m.abs().sum()) == 0 for s, m in params)  # starts as identity


def test_ldnf_outputs_rgb_directly():
    net = build_fusion_model({"name": "ldnf", **TINY["ldnf"]})
    assert net.out_channels == 3
    ir, vi = torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():  # untrained residual head: max(IR, VIS) per colour channel, the L_MCI target
        out = net(ir, vi, _text(0) | {"pooled": torch.randn(1, 12)})
    assert torch.allclose(out, torch.maximum(ir.expand_as(vi), vi).clamp(1e-3, 1 - 1e-3), atol=1e-5)


def test_ldnf_diffusion_features_from_denoiser(tmp_path):
    from fusionlab.models.denoiser import build_scheduler, build_unet, save_denoiser
    from fusionlab.models.fusion import load_fusion_model, save_fusion_model
    from fusionlab.models.fusion.ldnf import LDNF

    torch.manual_seed(0)
    unet = build_unet(block_out_channels=[8, 16], norm_num_groups=4, attention=False)
    save_denoiser(tmp_path / "denoiser", unet, build_scheduler())
    net = LDNF.from_denoiser(str(tmp_path / "denoiser"), width=8, n_blocks=1, text_dim=12, timesteps=[50], blocks=[0, 1])
    assert torch.equal(net.features.unet.conv_in.weight, unet.conv_in.weight)
    assert not net.train().features.unet.training  # the denoiser stays in eval mode while the net trains
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("features.") for n in trainable)  # the denoiser stays frozen
    ir, vi = torch.rand(1, 1, 20, 22), torch.rand(1, 3, 20, 22)
    text = {"pooled": torch.randn(1, 12)}
    out = net(ir, vi, text)
    out.mean().backward()
    assert out.shape == (1, 3, 20, 22)
    save_fusion_model(tmp_path / "fusion", net)   # self-contained: the UNet is in the fusion checkpoint
    again = load_fusion_model(tmp_path / "fusion")
    with torch.no_grad():
        assert torch.allclose(again(ir, vi, text), net.eval()(ir, vi, text), atol=1e-6)


def test_stage_switches_select_losses_and_helpers(stage_config):
    from fusionlab.stages.fusion import FusionTraining

    def parts(module, batch):
        text = module.text_for(batch["id"])
        return set(module.objective(module.net(batch["ir"], batch["vi"], text), batch, text))

    batch = {"id": None, "ir": torch.rand(2, 1, 24, 24), "vi": torch.rand(2, 3, 24, 24)}
    with_depth = FusionTraining(stage_config("ldnf", text_guidance=False).model_dump(mode="json"))
    without = FusionTraining(stage_config("ldnf", text_guidance=False, depth_loss=False).model_dump(mode="json"))
    assert parts(with_depth, batch) == {"total", "mci", "mcg", "depth"}
    assert parts(without, batch) == {"total", "mci", "mcg"}
    assert with_depth._cache is None and not with_depth.net.needs_text

    lang = FusionTraining(stage_config("ldfusion").model_dump(mode="json"))
    plain = FusionTraining(stage_config("ldfusion", text_guidance=False).model_dump(mode="json"))
    assert {"dir", "phi", "language", "fidelity"} <= parts(lang, batch)
    assert parts(plain, batch) == {"total", "fidelity"}
    assert "clip" in lang._helpers and "clip" not in plain._helpers
    assert not lang.net.needs_text  # CLIP only in training

    t2p = FusionTraining(stage_config("text2pixels").model_dump(mode="json"))
    assert t2p._cache is not None and t2p.net.cross_attn is not None
    ids = t2p._cache.ids[:2]
    assert {"content", "codebook", "alpha1", "alpha2"} <= parts(t2p, {**batch, "id": ids})


def test_presets_merge_and_reject_unknown_keys(stage_config):
    from fusionlab.errors import ConfigError
    from fusionlab.stages import fusion

    cfg = fusion.Config.model_validate(fusion.expand_config({"stage": "fusion", "preset": "tgif", "data": {"root": "x"}}))
    assert (cfg.model["dim"], cfg.model["heads"], cfg.model["encoder_blocks"], cfg.model["decoder_blocks"]) == (64, 8, 2, 3)
    assert cfg.loss.tgif.grad_weight == 20.0
    cfg = fusion.Config.model_validate(fusion.expand_config({"stage": "fusion", "preset": "ldfusion", "data": {"root": "x"}}))
    assert (cfg.loss.ldfusion.lam, cfg.loss.ldfusion.alpha, cfg.loss.ldfusion.min_entropy) == (0.5, 1.0, 6.0)
    assert list(cfg.loss.ldfusion.vgg_layers) == [3, 5, 10] and list(cfg.loss.ldfusion.patch_px) == [112, 180]
    with pytest.raises(ConfigError, match="tgif"):
        fusion.expand_config({"stage": "fusion", "preset": "tgiff", "data": {"root": "x"}})
    with pytest.raises(ConfigError, match="model"):
        fusion.build_net(stage_config("baseline", **{"model.widht": 4}))
