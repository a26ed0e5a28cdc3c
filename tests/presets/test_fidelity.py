"""Each preset is its paper's method by default (`fidelity` marker, part of `make test`).

PAPER below is written from the papers in ../shared/papers (the section or equation is next to
every value). Where a paper is silent the preset's README says what was chosen; those values are
not in this table. The default config of each preset (its preset.yaml, as stage 4 expands it)
must equal the table.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.fidelity

PAPER = {
    "ldnf": {  # LDNF (papers/ldnf-...); "[46]" = Dif-Fusion, which LDNF defers to for the diffusion part
        "text_guidance": (True, "III-C: text FiLM; the Lan ablation turns it off"),
        "depth_loss": (True, "III-A / Fig. 1: depth-driven loss; the Dep ablation turns it off"),
        "model.features": ("diffusion", "III-B: multi-channel features of the trained denoiser"),
        "model.timesteps": ([5, 50, 100], "[46] config/fusion_train.json t (LDNF names no timesteps)"),
        "model.blocks": (None, "[46] feat_scales: the decoder features of every scale"),
        "model.prior": ("none", "III-C: no max(IR, VIS) prior"),
        "model.stem": (False, "III-B: the decoder reads the diffusion features only"),
        "loss.ldnf.mci": (1.0, "III-D: L_f = L_MCG + L_MCI"),
        "loss.ldnf.mcg": (1.0, "III-D: L_f = L_MCG + L_MCI"),
        "loss.ldnf.silog_lambda": (1.0, "eq. 1"),
        "loss.ldnf.depth_scale": (1.0, "III-A: the fused image itself goes through the depth nets"),
        "optim.lr": (1e-4, "[46] train.optimizer: Adam, lr 1e-4"),
        "optim.schedule": ("linear", "[46] sheduler.lr_policy: linear"),
        "data.crop_size": (160, "[46] datasets.train.resolution: 160"),
        "data.batch_size": (1, "[46] datasets.train.batch_size: 1"),
        "trainer.max_epochs": (300, "[46] train.n_epoch: 300"),
    },
    "text2pixels": {
        "text_guidance": (True, "3.2: inter-domain cross-attention to the CLIP text"),
        "model.paths": (6, "eq. 1: six conv paths"),
        "model.self_attention": (True, "3.2 eq. 2-3"),
        "model.codebook": (True, "3.2 eq. 5-6"),
        "model.prior": ("none", "3.1-3.2: no max(IR, VIS) prior"),
        "loss.text2pixels.structure": (True, "eq. 8, 10"),
        "loss.text2pixels.content": (True, "eq. 9, 10"),
        "loss.text2pixels.codebook": (1.0, "eq. 7: f(z) + g(z)"),
        "loss.text2pixels.weights": ("printed", "eq. 9: ω₁ = S_x/|S_x - S_y|, ω₂ = 1 - ω₁"),
        "loss.text2pixels.alpha_floor": (None, "eq. 10: α₂ = the mean SSIM, no floor"),
        "optim.lr": (1e-4, "4: initial learning rate 1e-4"),
        "optim.schedule": ("exponential", "4: exponential decay"),
        "data.batch_size": (64, "4: batch size 64"),
        "trainer.max_epochs": (300, "4: 300 epochs"),
    },
    "ldfusion": {
        "text_guidance": (True, "3.4: the language-driven loss (W/O LDL turns it off)"),
        "loss.ldfusion.lam": (0.5, "eq. 10 and 4.3 'Analysis of λ'"),
        "loss.ldfusion.alpha": (1.0, "eq. 16 and 4.1"),
        "loss.ldfusion.patch_px": ([112, 180], "3.4.2: patches of 112x112 to 180x180"),
        "loss.ldfusion.min_entropy": (6.0, "3.4.3 eq. 17: σ = 6"),
        "loss.ldfusion.vgg_layers": ([3, 5, 10], "eq. 13: k ∈ {3, 5, 10}"),
        "loss.ldfusion.vgg_pretrained": ("IMAGENET1K_V1", "eq. 13: the pre-trained VGG-19"),
        "optim.lr": (1e-3, "4.1: Adam, lr 0.001"),
        "optim.warmup_epochs": (1, "4.1: warm-up during the first epoch"),
        "optim.schedule": ("step", "4.1: halving every 10 epochs after 50"),
        "optim.step_epochs": (10, "4.1"),
        "optim.gamma": (0.5, "4.1"),
        "optim.first_decay": (50, "4.1"),
        "data.crop_size": (224, "4.1: random 224x224 crops"),
        "data.batch_size": (16, "4.1: batches of 16"),
        "trainer.max_epochs": (70, "4.1: 70 epochs"),
    },
    "tgif": {
        "text_guidance": (True, "Component III: text-guided cross-attention"),
        "model.dim": (64, "Training Details: dimensionality 64"),
        "model.heads": (8, "Training Details: 8 attention heads"),
        "model.encoder_blocks": (2, "Training Details: M = 2"),
        "model.decoder_blocks": (3, "Training Details: N = 3"),
        "model.attn_stride": (1, "Component III: attention over the image features (no pooling)"),
        "model.prior": ("none", "Component III: no max(IR, VIS) prior"),
        "loss.tgif.grad_weight": (20.0, "eq. 1: α₁ = 20 (α₂ = 0)"),
        "optim.lr": (1e-4, "Training Details: Adam, initial lr 1e-4"),
        "optim.schedule": ("step", "Training Details: × 0.5 every 50 epochs"),
        "optim.step_epochs": (50, "Training Details"),
        "optim.gamma": (0.5, "Training Details"),
        "data.batch_size": (2, "Training Details: batch size 2"),
        "trainer.max_epochs": (300, "Training Details: 300 epochs"),
    },
}
ALL_INPUTS = {k: f"/in/{k}" for k in ("depth_ir", "depth_vis", "denoiser", "embeddings", "clip", "prompts")}


def _default(preset: str) -> dict:
    from fusionlab.stages import fusion

    raw = {"stage": "fusion", "preset": preset, "data": {"root": "/data"}, "inputs": ALL_INPUTS}
    return fusion.Config.model_validate(fusion.expand_config(raw)).model_dump(mode="json")


def _at(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return list(node) if isinstance(node, tuple) else node


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_default_config_is_the_papers(preset):
    cfg = _default(preset)
    wrong = {key: (_at(cfg, key), value, where) for key, (value, where) in PAPER[preset].items()
             if _at(cfg, key) != value}
    assert not wrong, "\n".join(f"{k}: default {got!r}, paper {want!r} ({where})" for k, (got, want, where) in wrong.items())
    assert set(cfg["loss"]) == {preset}


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_network_constructor_defaults_match_the_preset(preset):
    """Building the net from code (no YAML) gives the same paper architecture as the preset."""
    import inspect

    from fusionlab.presets import get_preset

    signature = inspect.signature(get_preset(preset).net_class.__init__).parameters
    for key, (value, where) in PAPER[preset].items():
        name = key.removeprefix("model.")
        if key.startswith("model.") and signature[name].default is not inspect.Parameter.empty:
            default = signature[name].default
            assert (list(default) if isinstance(default, tuple) else default) == value, \
                f"{preset}.{name}: {default!r} vs {value!r} ({where})"


def test_paper_architectures_have_the_papers_shape():
    from fusionlab.models.fusion import build_fusion_model
    from fusionlab.models.fusion.restormer import RestormerBlock

    tgif = build_fusion_model({"name": "tgif", "token_dim": 16})
    assert len(tgif.encoder) == 2 and len(tgif.decoder) == 3 and len(tgif.cross) == 2
    assert all(isinstance(b, RestormerBlock) for b in [*tgif.encoder, *tgif.decoder])
    t2p = build_fusion_model({"name": "text2pixels", "token_dim": 16})
    assert len(t2p.extract_ir.paths) == 6 and t2p.decoder[0].in_channels == t2p.codebook.embedding.embedding_dim
    # LDFusion sec. 3.5: three conv blocks halve the resolution, three transposed convs restore it
    ldf = build_fusion_model({"name": "ldfusion"})
    ir, vi = torch.rand(1, 1, 40, 48), torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        assert ldf.enc_ir(ir).shape[-2:] == (5, 6)
        assert ldf(ir, vi).shape == (1, 1, 40, 48)
    ups = [m for m in ldf.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 3 and all(m.stride == (2, 2) for m in ups) and ldf.multiple == 8


def test_text2pixels_decoder_receives_exactly_the_quantised_features():
    from fusionlab.models.fusion import build_fusion_model

    torch.manual_seed(0)
    net = build_fusion_model({"name": "text2pixels", "width": 8, "paths": 2, "heads": 2, "token_dim": 10,
                              "num_codes": 4, "text_guidance": False})
    seen = {}
    net.codebook.register_forward_hook(lambda m, args, out: seen.__setitem__("codebook", (args[0], out[0])))
    net.decoder.register_forward_pre_hook(lambda m, args: seen.__setitem__("decoder", args[0]))
    net(torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16))
    features, quantised = seen["codebook"]
    assert torch.equal(seen["decoder"], quantised)
    codes = net.codebook.embedding.weight
    flat = seen["decoder"].permute(0, 2, 3, 1).reshape(-1, codes.shape[1])
    assert all(bool((row == codes).all(1).any()) for row in flat)  # every decoded vector is a codebook entry
    assert not torch.equal(seen["decoder"], features)
    off = build_fusion_model({"name": "text2pixels", "width": 8, "paths": 2, "heads": 2, "num_codes": 4,
                              "text_guidance": False, "codebook": False})
    off.merge.register_forward_hook(lambda m, args, out: seen.__setitem__("merged", out))
    off.decoder.register_forward_pre_hook(lambda m, args: seen.__setitem__("decoder", args[0]))
    off(torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 8))
    assert torch.equal(seen["decoder"], seen["merged"])


def test_depth_loss_adds_a_gradient_path_through_the_frozen_depth_nets(stage_config):
    from fusionlab.presets import build_net, build_objective

    cfg = stage_config("ldnf", text_guidance=False)
    net = build_net(cfg)
    objective = build_objective(cfg, net)
    nets = [objective.depth.depth_ir, objective.depth.depth_vis]
    assert all(not p.requires_grad for n in nets for p in n.parameters())
    batch = {"ir": torch.rand(2, 1, 24, 24), "vi": torch.rand(2, 3, 24, 24)}
    fused = torch.rand(2, 3, 24, 24, requires_grad=True)
    parts = objective(fused, batch, None)
    (grad,) = torch.autograd.grad(parts["depth"], fused)
    assert grad.abs().sum() > 0  # the depth term reaches the fused image through both frozen nets
    assert all(p.grad is None for n in nets for p in n.parameters())
    image_only = objective.lc.mci * parts["mci"] + objective.lc.mcg * parts["mcg"]
    assert float(parts["total"]) == pytest.approx(float(image_only + objective.lc.depth * parts["depth"]), rel=1e-6)
    without = build_objective(stage_config("ldnf", text_guidance=False, depth_loss=False), net)
    assert without.depth is None and "depth" not in without(fused, batch, None)


def test_learning_rate_schedules_follow_the_papers():
    from fusionlab.stages.fusion import OptimConfig

    def schedule(preset):
        return OptimConfig.model_validate(_default(preset)["optim"])

    ldf, tgif, t2p, ldnf = schedule("ldfusion"), schedule("tgif"), schedule("text2pixels"), schedule("ldnf")
    # LDFusion 4.1: warm-up over the first epoch, 1e-3 until 50, then halved every 10 epochs
    assert [ldf.multiplier(s, 10, 70) for s in (0, 4, 9, 10)] == [0.1, 0.5, 1.0, 1.0]
    assert [ldf.factor(e, 70) for e in (49, 50, 59, 60, 69)] == [1.0, 0.5, 0.5, 0.25, 0.25]
    # TGIF: × 0.5 every 50 epochs
    assert [tgif.factor(e, 300) for e in (0, 49, 50, 99, 100, 299)] == [1, 1, 0.5, 0.5, 0.25, 0.5 ** 5]
    assert tgif.multiplier(0, 10, 300) == 1.0  # no warm-up
    # Text2Pixels: exponential decay per epoch; Dif-Fusion (ldnf): linear to 0 over the run
    assert t2p.factor(10, 300) == pytest.approx(0.99 ** 10)
    assert ldnf.factor(0, 300) == 1.0 and ldnf.factor(150, 300) == pytest.approx(1 - 150 / 301)
    assert OptimConfig(step_epochs=50).schedule == "step"  # the old spelling still halves
    with pytest.raises(ValueError, match="step_epochs"):
        OptimConfig(schedule="step")


def test_tgif_text_off_removes_all_text():
    """`text_guidance: off` is "no text at all", not the paper's "w/o text" row (which keeps the initial text)."""
    from fusionlab.models.fusion import build_fusion_model

    off = build_fusion_model({"name": "tgif", "dim": 8, "heads": 2, "encoder_blocks": 1, "decoder_blocks": 1,
                              "text_guidance": False})
    assert not hasattr(off, "adapter") and not hasattr(off, "cross") and not off.needs_text
