"""Optimisation modes: where each gradient comes from, one real training step each, and the
epoch-keyed data that makes a resumed run repeat the interrupted epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def _tiny_text_fusion():
    from fusionlab.models.fusion import FusionNet

    class TinyTextFusion(FusionNet):
        """forward(ir, vi, text) -> [B,1,H,W]; uses the text, so the stage must pass it."""

        out_channels = 1
        needs_text = True

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, 3, padding=1)
            self.film = nn.Linear(4, 1)

        def forward(self, ir, vi, text=None):
            shift = self.film(text["pooled"]).view(-1, 1, 1, 1)
            return torch.sigmoid(self.conv(torch.cat([ir, self.luma(vi)], 1)) + shift)

    return TinyTextFusion()


def curved_objective(fused, batch, text):
    """A stand-in lower level f: squared error to the brighter source (its Hessian is not zero)."""
    y = fused
    target = torch.maximum(batch["ir"], batch["vi"].mean(1, keepdim=True))
    return {"total": ((y - target) ** 2).mean() * 10}


def zero_objective(fused, batch, text):
    return {"total": fused.sum() * 0.0}


def _module(mode, tiny_detector_cfg, objective=curved_objective, **optim):
    from fusionlab.detection.bilevel import DetectFusionModule
    from fusionlab.models.detector import build_detector

    torch.manual_seed(0)
    det = build_detector(tiny_detector_cfg, nc=3)
    text_fn = lambda ids, device=None: {"pooled": torch.ones(len(ids), 4, device=device)}  # noqa: E731 (EmbeddingCache.get)
    module = DetectFusionModule(_tiny_text_fusion(), det, objective, mode=mode, optim=optim, text_fn=text_fn)
    opts = module.configure_optimizers()
    module.optimizers = lambda: opts  # outside a Trainer: drive the manual-optimisation steps directly
    module.manual_backward = lambda loss, **kw: loss.backward(**kw)
    return module


def _batch(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    return {"id": [str(i) for i in range(n)], "ir": torch.rand(n, 1, size, size, generator=g),
            "vi": torch.rand(n, 3, size, size, generator=g),
            "boxes": torch.tensor([[i, i % 3, 0.5, 0.5, 0.3, 0.3] for i in range(n)], dtype=torch.float32)}


def _grads(params) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


def test_bilevel_gradients_are_the_lower_gradient_plus_the_hypergradient(tiny_detector_cfg):
    """φ gets ∇F(φ₀) + w·h and ω gets ∇_ω L_d(ω; z(φ_K)): recomputed here from the pieces."""
    from fusionlab.detection.hypergrad import hypergradient, solve_lower

    module = _module("bilevel", tiny_detector_cfg, hypergrad="unrolled", lower_steps=2, inner_lr=0.5, det_weight=0.7)
    batch = _batch()
    text = module.text(batch)
    params = module.fusion_params()
    start = {n: p.detach().clone() for n, p in params.items()}
    det_start = [p.detach().clone() for p in module.det_params()]

    def F(p):
        return curved_objective(module.fuse(batch, text, p), batch, text)["total"]

    hg = module.optim_cfg.hypergrad_spec()
    solution = solve_lower(F, start, hg)
    z = module.rgb(module.fuse(batch, text, solution.last), batch)
    ld, _ = module.detection_loss(z, batch)
    v = torch.autograd.grad(ld, list(solution.last.values()), retain_graph=True)
    h = hypergradient(F, solution, list(v), hg)
    expected_phi = [g0 + 0.7 * hi for g0, hi in zip(solution.grad0, h, strict=True)]
    expected_det = torch.autograd.grad(ld, module.det_params(), allow_unused=True)

    module.bilevel_step(batch)
    for got, want in zip(_grads(params.values()), expected_phi, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for got, want, p in zip(_grads(module.det_params()), expected_det, module.det_params(), strict=True):
        torch.testing.assert_close(got, torch.zeros_like(p) if want is None else want, atol=1e-6, rtol=1e-5)
    assert any((h_ - 0).abs().sum() > 0 for h_ in h)  # the upper level does reach the fusion net
    assert any(not torch.equal(a, b) for a, b in zip(det_start, module.det_params(), strict=True))  # ω stepped
    assert any(not torch.equal(start[n], p) for n, p in params.items())  # φ stepped


@pytest.mark.parametrize("hypergrad", ["first_order", "unrolled", "implicit"])
def test_each_hypergradient_option_reaches_the_fusion_net(tiny_detector_cfg, hypergrad):
    # lower objective 0: any gradient on the fusion net comes from the detection hypergradient
    module = _module("bilevel", tiny_detector_cfg, zero_objective, hypergrad=hypergrad, det_weight=1.0)
    logs = module.bilevel_step(_batch())
    assert sum(float(g.abs().sum()) for g in _grads(module.fusion_params().values())) > 0
    assert torch.isfinite(logs["hypergrad_norm"]) and logs["hypergrad_norm"] > 0


def test_alternating_detector_step_sends_no_gradient_to_fusion(tiny_detector_cfg):
    module = _module("alternating", tiny_detector_cfg, k=1)
    batch = _batch()
    fusion_before = [p.detach().clone() for p in module.fusion_params().values()]
    module.alternating_step(batch)  # step 0: a fusion step; the detector is held fixed
    assert any(not torch.equal(a, b) for a, b in zip(fusion_before, module.fusion_params().values(), strict=True))
    module.steps_done = 1
    fusion_before = [p.detach().clone() for p in module.fusion_params().values()]
    det_before = [p.detach().clone() for p in module.det_params()]
    module.alternating_step(batch)  # step 1: a detector step
    assert all(float(g.abs().sum()) == 0 for g in _grads(module.fusion_params().values()))
    assert all(torch.equal(a, b) for a, b in zip(fusion_before, module.fusion_params().values(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(det_before, module.det_params(), strict=True))


def test_joint_step_updates_both(tiny_detector_cfg):
    module = _module("joint", tiny_detector_cfg, zero_objective)
    module.joint_step(_batch())
    assert sum(float(g.abs().sum()) for g in _grads(module.fusion_params().values())) > 0
    assert any(float(g.abs().sum()) > 0 for g in _grads(module.det_params()))


def test_fused_images_are_resized_for_the_detector_and_boxes_follow(tiny_detector_cfg):
    module = _module("bilevel", tiny_detector_cfg)
    module.imgsz = 96
    fused = torch.rand(2, 3, 48, 64, requires_grad=True)  # 64 wide, 48 high
    z, size = module.to_detector(fused)
    assert size == (72, 96) and z.shape[-2:] == (96, 96)  # resized, then padded to the stride
    seen = {}

    def criterion(preds, boxes):
        seen["boxes"] = boxes
        return torch.zeros(()), None

    module.criterion = criterion
    module.detection_loss(fused, _batch())
    assert torch.allclose(seen["boxes"][:, 3], _batch()["boxes"][:, 3] * 72 / 96)
    assert torch.allclose(seen["boxes"][:, 2], _batch()["boxes"][:, 2])
    assert z.requires_grad  # the resize keeps the graph to the fusion net


@pytest.mark.parametrize("mode", ["bilevel", "joint"])
def test_frozen_parts_of_the_fusion_net_are_left_alone(tiny_detector_cfg, mode):
    """A preset may carry frozen modules (ldnf holds its stage-2 denoiser): steps must skip them."""
    module = _module(mode, tiny_detector_cfg)
    module.fusion_net.frozen = nn.Linear(3, 3).requires_grad_(False)
    frozen = module.fusion_net.frozen.weight.detach().clone()
    opts = module.configure_optimizers()
    module.optimizers = lambda: opts
    getattr(module, f"{mode}_step")(_batch())
    assert module.fusion_net.frozen.weight.grad is None
    assert torch.equal(frozen, module.fusion_net.frozen.weight)
    assert "frozen.weight" not in module.fusion_params()


def test_epoch_keyed_draws_repeat_an_epoch_without_replaying_the_earlier_ones(tiny_dataset):
    """A run resumed at epoch 1 (fresh loader, set_epoch(1)) sees exactly the batches and flips the
    uninterrupted run saw in its epoch 1."""
    from fusionlab.data.config import DataConfig
    from fusionlab.detection.bilevel import BilevelData

    def epoch_batches(loader, epoch):
        loader.sampler.set_epoch(epoch)
        return [(b["id"], b["ir"].clone(), b["boxes"].clone()) for b in loader]

    cfg = DataConfig(root=str(tiny_dataset), batch_size=3, val_fraction=0.25, crop_size=48, flip=True)
    running = BilevelData(cfg).train_dataloader()
    epoch_batches(running, 0)
    uninterrupted = epoch_batches(running, 1)
    resumed = epoch_batches(BilevelData(cfg).train_dataloader(), 1)
    assert [ids for ids, _, _ in uninterrupted] == [ids for ids, _, _ in resumed]
    for (_, a, ba), (_, b, bb) in zip(uninterrupted, resumed, strict=True):
        assert torch.equal(a, b) and torch.equal(ba, bb)
    other = epoch_batches(BilevelData(cfg).train_dataloader(), 2)
    assert [ids for ids, _, _ in other] != [ids for ids, _, _ in uninterrupted]  # each epoch its own order


@pytest.mark.parametrize("mode", ["joint", "alternating", "bilevel"])
def test_one_lightning_training_step_per_mode(tmp_path, mode, tiny_dataset, tiny_detector_cfg):
    import lightning as L

    from fusionlab.data.config import DataConfig
    from fusionlab.detection.bilevel import BilevelData, DetectFusionModule
    from fusionlab.detection.objective import lower_objective
    from fusionlab.models.detector import build_detector
    from fusionlab.models.fusion import build_fusion_model

    torch.manual_seed(0)
    dm = BilevelData(DataConfig(root=str(tiny_dataset), batch_size=2, val_fraction=0.25))
    net = build_fusion_model({"name": "baseline", "width": 4, "depth": 1})
    objective = lower_objective(net, {"stage": "fusion", "preset": "baseline", "text_guidance": False},
                                data_root=str(tiny_dataset))
    module = DetectFusionModule(net, build_detector(tiny_detector_cfg, nc=len(dm.classes)), objective, mode=mode,
                                optim={"k": 1})
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert module.steps_done == 1 and module.hparams["mode"] == mode
    changed = {n.split(".")[0] for n, p in module.named_parameters() if n in before and not torch.equal(before[n], p)}
    assert "fusion_net" in changed  # alternating's first step is a fusion step
    assert ("detector" in changed) == (mode != "alternating")
    assert set(module.state_dict()) == {n for n in module.state_dict() if n.split(".")[0] in ("fusion_net", "detector")}
