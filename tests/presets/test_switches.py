"""The papers' ablation switches change what they should: `text_guidance` (every preset) and
`depth_loss` (ldnf), in the networks and in the stage's training objective."""

from __future__ import annotations

import pytest
import torch

from fusionlab.models.fusion import build_fusion_model, rgb_to_y

TINY = {
    "ldnf": {"features": "conv", "width": 8, "n_blocks": 2, "film_hidden": 16, "text_dim": 12},
    "text2pixels": {"width": 8, "paths": 2, "heads": 2, "token_dim": 10, "num_codes": 8},
    "tgif": {"dim": 8, "heads": 2, "encoder_blocks": 1, "decoder_blocks": 1, "token_dim": 10},
}


def _text(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"pooled": torch.randn(2, 12, generator=g), "tokens": torch.randn(2, 5, 10, generator=g),
            "mask": torch.tensor([[True] * 5, [True, True, False, False, False]])}


@pytest.mark.fidelity
@pytest.mark.parametrize("preset", sorted(TINY))
def test_text_guidance_switch_in_networks(preset):
    """With text on, two captions give two fusions of the same image; with text off, they give one."""
    ir, vi = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    torch.manual_seed(0)
    on = build_fusion_model({"name": preset, **TINY[preset], "text_guidance": True})
    off = build_fusion_model({"name": preset, **TINY[preset], "text_guidance": False})
    assert on.needs_text and not off.needs_text
    assert sum(p.numel() for p in off.parameters()) < sum(p.numel() for p in on.parameters())
    with torch.no_grad():  # freshly initialised, as built by default (no zero-initialised text path)
        assert not torch.allclose(on(ir, vi, _text(0)), on(ir, vi, _text(1)))   # text steers the fusion
        assert torch.equal(off(ir, vi, _text(0)), off(ir, vi, _text(1)))         # ...or is ignored
        assert torch.equal(off(ir, vi, None), off(ir, vi, _text(0)))
        out = on(ir, vi, _text(0))
    assert out.shape == (2, on.out_channels, 16, 16) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_ldnf_film_formula_and_optional_identity_start():
    from fusionlab.models.fusion.film import TextFiLM, film

    feats = torch.randn(2, 3, 4, 4)
    sigma, mu = torch.tensor([[0.5, 0.0, -1.0]] * 2), torch.tensor([[1.0, 2.0, 0.0]] * 2)
    out = film(feats, sigma, mu)
    assert torch.allclose(out[:, 0], 1.5 * feats[:, 0] + 1.0)
    assert torch.allclose(out[:, 1], feats[:, 1] + 2.0)
    assert torch.allclose(out[:, 2], torch.zeros_like(out[:, 2]))
    text = torch.randn(2, 12)
    params = TextFiLM(12, [3, 5], zero_init=True)(text)
    assert [(s.shape, m.shape) for s, m in params] == [((2, 3), (2, 3)), ((2, 5), (2, 5))]
    assert all(float(s.abs().sum()) == 0 and float(m.abs().sum()) == 0 for s, m in params)  # starts as identity
    assert any(float(s.abs().sum()) > 0 for s, _ in TextFiLM(12, [3, 5])(text))  # default: a random start


@pytest.mark.fidelity
@pytest.mark.parametrize("preset", sorted(TINY))
def test_prior_none_is_not_max_fusion_and_prior_max_is(preset):
    """The max(IR, VIS) prior is fusionlab's opt-in switch: by default the untrained net is not max-fusion."""
    ir, vi = torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16)
    text = _text(0) | {"pooled": torch.randn(1, 12), "tokens": torch.randn(1, 5, 10), "mask": torch.ones(1, 5, dtype=torch.bool)}
    maximum = {3: torch.maximum(ir.expand_as(vi), vi), 1: torch.maximum(ir, rgb_to_y(vi))}
    torch.manual_seed(0)
    plain = build_fusion_model({"name": preset, **TINY[preset]})
    prior = build_fusion_model({"name": preset, **TINY[preset], "prior": "max"})
    with torch.no_grad():
        target = maximum[plain.out_channels].clamp(1e-3, 1 - 1e-3)
        assert (plain(ir, vi, text) - target).abs().mean() > 0.05
        assert torch.allclose(prior(ir, vi, text), target, atol=1e-5)
    assert build_fusion_model({"name": preset, **TINY[preset]}).config.get("prior", "none") == "none"


def test_ldnf_outputs_rgb_directly():
    net = build_fusion_model({"name": "ldnf", **TINY["ldnf"]})
    assert net.out_channels == 3 and net.stem is None  # the raw-input stem is off by default
    assert build_fusion_model({"name": "ldnf", **TINY["ldnf"], "stem": True}).stem is not None
    with torch.no_grad():
        out = net(torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16), {"pooled": torch.randn(1, 12)})
    assert out.shape == (1, 3, 16, 16)


def test_ldnf_diffusion_features_from_denoiser(tmp_path):
    from fusionlab.models.denoiser import build_scheduler, build_unet, save_denoiser
    from fusionlab.models.fusion import load_fusion_model, save_fusion_model
    from fusionlab.presets.ldnf.net import LDNF

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
    assert with_depth.cache is None and not with_depth.net.needs_text
    # the frozen helpers live in the objective, not in the network or the Lightning checkpoint
    assert not any(k.startswith("objective") for k in with_depth.state_dict())
    assert not any("depth" in k for k in with_depth.net.state_dict())

    lang = FusionTraining(stage_config("ldfusion").model_dump(mode="json"))
    plain = FusionTraining(stage_config("ldfusion", text_guidance=False).model_dump(mode="json"))
    assert {"dir", "phi", "language", "fidelity"} <= parts(lang, batch)
    assert parts(plain, batch) == {"total", "fidelity"}
    assert lang.objective.clip is not None and plain.objective.clip is None
    assert not lang.net.needs_text  # CLIP only in training

    t2p = FusionTraining(stage_config("text2pixels").model_dump(mode="json"))
    assert t2p.cache is not None and t2p.net.cross_attn is not None
    ids = t2p.cache.ids[:2]
    assert {"content", "codebook", "alpha1", "alpha2"} <= parts(t2p, {**batch, "id": ids})
    assert t2p.objective.previous is None
    t2p.objective.on_train_epoch_start(t2p.net, 1)  # z′ = a frozen copy of the net from the epoch start
    prev = t2p.objective.previous
    assert prev is not t2p.net and not any(p.requires_grad for p in prev.parameters())
    assert "structure" in parts(t2p, {**batch, "id": ids})


def test_presets_merge_and_reject_unknown_keys(stage_config):
    from fusionlab.errors import ConfigError
    from fusionlab.presets import build_net
    from fusionlab.stages import fusion

    cfg = fusion.Config.model_validate(fusion.expand_config({"stage": "fusion", "preset": "tgif", "data": {"root": "x"},
                                                             "inputs": {"embeddings": "e"}}))
    assert (cfg.model["dim"], cfg.model["heads"], cfg.model["encoder_blocks"], cfg.model["decoder_blocks"]) == (64, 8, 2, 3)
    assert cfg.loss == {"tgif": {"grad_weight": 20.0}}  # only the chosen preset's section
    cfg = fusion.Config.model_validate(fusion.expand_config({"stage": "fusion", "preset": "ldfusion", "data": {"root": "x"},
                                                             "inputs": {"clip": "c", "prompts": "p"}}))
    lc = cfg.loss["ldfusion"]
    assert (lc["lam"], lc["alpha"], lc["min_entropy"]) == (0.5, 1.0, 6.0)
    assert list(lc["vgg_layers"]) == [3, 5, 10] and list(lc["patch_px"]) == [112, 180]
    with pytest.raises(ConfigError, match="tgif"):
        fusion.expand_config({"stage": "fusion", "preset": "tgiff", "data": {"root": "x"}})
    with pytest.raises(ConfigError, match="did you mean 'model.width'"):
        build_net(stage_config("baseline", **{"model.widht": 4}))
