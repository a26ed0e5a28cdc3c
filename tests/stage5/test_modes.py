"""Optimisation modes: where the detection loss's gradient goes, and one real training step each."""

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


def _module(mode, tiny_detector_cfg, **optim):
    from fusionlab.models.detector import build_detector
    from fusionlab.stages.detect import DetectFusionModule

    torch.manual_seed(0)
    det = build_detector(tiny_detector_cfg, nc=3)
    text_fn = lambda ids, device=None: {"pooled": torch.ones(len(ids), 4, device=device)}  # noqa: E731 (EmbeddingCache.get)
    module = DetectFusionModule(_tiny_text_fusion(), det, mode=mode, optim=optim, text_fn=text_fn)
    opts = module.configure_optimizers()
    module.optimizers = lambda: opts  # outside a Trainer: drive the manual-optimisation steps directly
    module.manual_backward = lambda loss, **kw: loss.backward(**kw)
    return module


def _batch(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    return {"id": [str(i) for i in range(n)], "ir": torch.rand(n, 1, size, size, generator=g),
            "vi": torch.rand(n, 3, size, size, generator=g),
            "boxes": torch.tensor([[i, i % 3, 0.5, 0.5, 0.3, 0.3] for i in range(n)], dtype=torch.float32)}


def _fusion_grad(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.fusion_net.parameters() if p.grad is not None)


@pytest.mark.parametrize("hypergrad", ["unrolled", "first_order"])
def test_bilevel_detection_loss_reaches_the_fusion_net(tiny_detector_cfg, hypergrad):
    # fidelity weights 0: any gradient on the fusion net must come from the detection hypergradient
    module = _module("bilevel", tiny_detector_cfg, hypergrad=hypergrad, intensity_weight=0.0, gradient_weight=0.0,
                     structure_weight=0.0, det_weight=1.0, lr_fusion=1e-2)
    before = [p.detach().clone() for p in module.fusion_net.parameters()]
    det_before = [p.detach().clone() for p in module.det_params()]
    logs = module.bilevel_step(_batch())
    assert _fusion_grad(module) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, module.fusion_net.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(det_before, module.det_params(), strict=True))  # upper level stepped
    assert torch.isfinite(logs["loss_det_lookahead"])


def test_unrolled_hypergradient_differs_from_first_order(tiny_detector_cfg):
    grads = {}
    for hypergrad in ("unrolled", "first_order"):
        module = _module("bilevel", tiny_detector_cfg, hypergrad=hypergrad, intensity_weight=0.0, gradient_weight=0.0,
                         structure_weight=0.0, inner_lr=1.0)
        module.bilevel_step(_batch())
        grads[hypergrad] = torch.cat([p.grad.flatten() for p in module.fusion_net.parameters()])
    assert not torch.allclose(grads["unrolled"], grads["first_order"])  # the second-order term is there


def test_alternating_detector_step_sends_no_gradient_to_fusion(tiny_detector_cfg):
    module = _module("alternating", tiny_detector_cfg, k=1)
    batch = _batch()
    module.alternating_step(batch)  # step 0: fusion step
    assert _fusion_grad(module) > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.det_params())  # detector held fixed
    module.steps_done = 1
    for p in module.fusion_net.parameters():
        p.grad = None
    fusion_before = [p.detach().clone() for p in module.fusion_net.parameters()]
    det_before = [p.detach().clone() for p in module.det_params()]
    module.alternating_step(batch)  # step 1: detector step
    assert all(p.grad is None for p in module.fusion_net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(fusion_before, module.fusion_net.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(det_before, module.det_params(), strict=True))


def test_joint_step_updates_both(tiny_detector_cfg):
    module = _module("joint", tiny_detector_cfg, intensity_weight=0.0, gradient_weight=0.0, structure_weight=0.0)
    module.joint_step(_batch())
    assert _fusion_grad(module) > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.det_params())


@pytest.mark.parametrize("mode", ["joint", "alternating", "bilevel"])
def test_one_lightning_training_step_per_mode(tmp_path, mode, tiny_dataset, tiny_detector_cfg):
    import lightning as L

    from fusionlab.data.config import DataConfig
    from fusionlab.data.datamodule import FusionDataModule
    from fusionlab.models.detector import build_detector
    from fusionlab.models.fusion import build_fusion_model
    from fusionlab.stages.detect import DetectFusionModule

    torch.manual_seed(0)
    dm = FusionDataModule(DataConfig(root=str(tiny_dataset), batch_size=2, val_fraction=0.25))
    net = build_fusion_model({"name": "baseline", "width": 4, "depth": 1})
    module = DetectFusionModule(net, build_detector(tiny_detector_cfg, nc=len(dm.classes)), mode=mode,
                                optim={"k": 1})
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert module.steps_done == 1
    assert module.hparams["mode"] == mode
    changed = {n.split(".")[0] for n, p in module.named_parameters() if n in before and not torch.equal(before[n], p)}
    assert "fusion_net" in changed  # alternating's first step is a fusion step
    assert ("detector" in changed) == (mode != "alternating")
    assert "anchor_net" not in changed


def test_fused_images_are_resized_for_the_detector_and_boxes_follow(tiny_detector_cfg):
    module = _module("bilevel", tiny_detector_cfg)
    module.imgsz = 96
    batch = _batch()
    batch["ir"], batch["vi"] = batch["ir"][..., :48, :], batch["vi"][..., :48, :]  # 64 wide, 48 high
    fused, z, boxes = module.fused_for_detector(batch)
    assert fused.shape[-2:] == (48, 64)  # the lower level works at the input size
    assert z.shape[-2:] == (96, 96)  # 72x96 after resizing, padded to the stride
    assert torch.allclose(boxes[:, 3], batch["boxes"][:, 3] * 72 / 96)
    assert torch.allclose(boxes[:, 2], batch["boxes"][:, 2])
    assert z.requires_grad  # the resize keeps the graph to the fusion net


@pytest.mark.parametrize("mode", ["bilevel", "joint"])
def test_frozen_parts_of_the_fusion_net_are_left_alone(tiny_detector_cfg, mode):
    """A preset may carry frozen modules (ldnf holds its stage-2 denoiser): steps must skip them."""
    module = _module(mode, tiny_detector_cfg)
    module.fusion_net.frozen = nn.Linear(3, 3).requires_grad_(False)
    frozen = module.fusion_net.frozen.weight.detach().clone()
    module.configure_optimizers()
    getattr(module, f"{mode}_step")(_batch())
    assert module.fusion_net.frozen.weight.grad is None
    assert torch.equal(frozen, module.fusion_net.frozen.weight)
    assert _fusion_grad(module) > 0
