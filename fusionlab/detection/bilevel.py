"""Stage 5's training: the fusion net (lower level) and a YOLO (upper level), Text2Pixels eq. 7.

`DetectFusionModule` trains both nets under manual optimisation with two optimisers, in one of
three modes (the paper's training-strategy ablation):

* `bilevel` (default): the lower level descends its own stage-4 objective F = f + g; the detector
  is trained on the lower-level solution z* = z(φ_K) and its loss reaches the fusion net only
  through the hypergradient of `fusionlab.detection.hypergrad` (options `first_order`,
  `unrolled`, `implicit`). The fusion net's update is ∇F(φ₀) + w·h: it keeps solving its own
  problem while the upper level selects among its solutions.
* `joint`: one summed loss F(z) + w·L_d(ω; z), both nets stepped on it ("direct joint training").
* `alternating`: `k` fusion steps on F + w·L_d with the detector fixed, then one detector step
  on the current fused images (no gradient reaches the fusion net from it).

Data-parallel correctness: every step ends in ONE `manual_backward` whose loss touches every
trainable parameter, so DDP's all-reduce averages all gradients. In `bilevel` the fusion
gradient enters that backward as the surrogate Σ⟨φ, sg(∇F + w·h)⟩, whose value is already the
same on every rank (the hypergradient's own reductions are explicit). No `.grad` is assigned by
hand, so gradient scaling (16-mixed) and clipping see every gradient.

Exact resume: shuffling and augmentation are functions of (seed, epoch, index) (`EpochSampler`,
`EpochAugmented`), and every step reseeds torch's RNG from (seed, step, rank) before the
objective runs, so a run restored from an epoch-end checkpoint repeats the interrupted epoch
draw for draw. Frozen copies (text2pixels' z′) are rebuilt at each epoch start, not checkpointed.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import lightning as L
import torch
from pydantic import Field
from torch import nn

from fusionlab.config import Section
from fusionlab.data.datamodule import FusionDataModule
from fusionlab.detection.hypergrad import Hypergrad, hypergradient, mean_over_ranks, solve_lower


class OptimConfig(Section):
    """The two optimisers and how the levels are coupled."""

    lr_fusion: float = Field(1e-4, gt=0)
    lr_detector: float = Field(2e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)  # the detector's AdamW
    det_weight: float = Field(1.0, ge=0)  # w: weight of the detection hypergradient (joint: of L_d) for the fusion net
    hypergrad: Literal["first_order", "unrolled", "implicit"] = "unrolled"
    lower_steps: int = Field(1, ge=1)  # K lower-level steps per training step (bilevel)
    inner_lr: float = Field(1e-3, gt=0)  # η of those steps
    prox: float = Field(1.0, gt=0)  # λ of the proximal lower problem (implicit)
    solver: Literal["neumann", "cg"] = "neumann"  # implicit: (I + H/λ)⁻¹ v by Neumann series or CG
    solver_steps: int = Field(5, ge=1)  # J: Neumann terms / CG iterations
    k: int = Field(2, gt=0)  # alternating: fusion steps per detector step

    def hypergrad_spec(self) -> Hypergrad:
        return Hypergrad(self.hypergrad, self.lower_steps, self.inner_lr, self.prox, self.solver, self.solver_steps)


# --------------------------------------------------------------------------- data: draws keyed by (seed, epoch)


class EpochSampler(torch.utils.data.DistributedSampler):
    """Shuffled indices that depend on (seed, epoch) only, split over ranks; yields (epoch, index)
    so the dataset's augmentation can depend on them too. Lightning calls `set_epoch`."""

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in super().__iter__())


class EpochAugmented(torch.utils.data.Dataset):
    """Random crop + flip of a PairDataset drawn from (seed, epoch, index), not from a running RNG."""

    def __init__(self, base, crop_size: int | None, flip: bool, seed: int):
        self.base, self.crop_size, self.flip, self.seed = base, crop_size, flip, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        from fusionlab.data.transforms import hflip, random_crop

        epoch, index = key
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_003 + index)
        sample = self.base[index]
        if self.crop_size is not None:
            sample = random_crop(sample, self.crop_size, generator=g)
        if self.flip and bool(torch.rand((), generator=g) < 0.5):
            sample = hflip(sample)
        return sample


class BilevelData(FusionDataModule):
    """The stage's data: FusionDataModule's split and batching, training draws keyed by (seed, epoch)."""

    def train_dataloader(self):
        from fusionlab.data.collate import collate_samples

        self.setup()
        cfg, data = self.cfg, self.train_set
        ds = EpochAugmented(data, cfg.crop_size, cfg.flip, cfg.seed)
        bs = min(self._batch_size(data, cfg.crop_size is not None), len(ds))
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = EpochSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
        return torch.utils.data.DataLoader(ds, batch_size=bs, sampler=sampler, num_workers=cfg.num_workers,
                                           collate_fn=collate_samples, persistent_workers=cfg.num_workers > 0)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one training step on one rank (random draws inside objectives)."""
    return ((seed * 1_000_003 + step) * 1_000_003 + rank) % (2**63)


# --------------------------------------------------------------------------- helpers


class _Fuse(nn.Module):
    """`fuse_raw(net, ...)` as a module, so `torch.func.functional_call` can swap the net's parameters."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, ir, vi, text):
        from fusionlab.models.fusion.base import fuse_raw

        return fuse_raw(self.net, ir, vi, text)


@contextlib.contextmanager
def frozen_features_once(net: nn.Module):
    """Within the block, frozen feature extractors inside `net` (ldnf's diffusion features) compute a
    batch once, however often the lower level evaluates the net on it."""
    from fusionlab.models.denoiser import DiffusionFeatureExtractor

    with contextlib.ExitStack() as stack:
        for m in net.modules():
            if isinstance(m, DiffusionFeatureExtractor):
                stack.enter_context(m.reuse())
        yield


def _touch(params) -> torch.Tensor | float:
    """0 with a graph into `params`: every parameter then takes part in the step's one backward (DDP)."""
    total = 0.0
    for p in params:
        total = total + p.sum() * 0.0
    return total


# --------------------------------------------------------------------------- the LightningModule


class DetectFusionModule(L.LightningModule):
    """Fusion net φ (lower level) + detector ω (upper level) under manual optimisation.

    `objective(fused, batch, text) -> {"total": F, <terms>}` is the lower level (the net's stage-4
    objective, `fusionlab.detection.objective.lower_objective`); it may have `on_epoch_start(epoch)`
    and `to(device)`. `criterion(preds, boxes) -> (loss, items)` is the detection loss
    (default: ultralytics' v8DetectionLoss through `DetectionCriterion`).
    """

    def __init__(self, fusion_net: nn.Module, detector: nn.Module, objective, *, mode: str = "bilevel",
                 optim: dict | None = None, criterion=None, imgsz: int | None = None, text_fn=None, seed: int = 0,
                 det_reduction: str = "mean"):
        super().__init__()
        from fusionlab.models.detector import DetectionCriterion

        self.automatic_optimization = False
        self.save_hyperparameters({"mode": mode, "optim": optim or {}, "imgsz": imgsz, "seed": seed})
        self.mode, self.imgsz, self.seed = mode, imgsz, seed
        self.optim_cfg = OptimConfig(**(optim or {}))
        self.fusion_net = fusion_net
        self.detector = detector
        self.objective = objective  # plain object: its frozen helpers stay out of the checkpoint
        self.criterion = criterion if criterion is not None else DetectionCriterion(detector, det_reduction)
        self.text_fn = text_fn
        self.steps_done = 0
        self.last_logs: dict[str, float] = {}  # the last step's losses (checkpointed: a resumed run reports them too)
        self.timing = {"images": 0, "seconds": 0.0}  # training steps of this process (throughput, not checkpointed)

    # ---------------------------------------------------------------- pieces
    def fusion_params(self) -> dict[str, nn.Parameter]:
        """Trainable fusion parameters (a preset may hold frozen parts, e.g. ldnf's denoiser)."""
        return {n: p for n, p in self.fusion_net.named_parameters() if p.requires_grad}

    def det_params(self) -> list[nn.Parameter]:
        return [p for p in self.detector.parameters() if p.requires_grad]

    def text(self, batch) -> dict | None:
        if self.text_fn is None or not getattr(self.fusion_net, "needs_text", False):
            return None
        return self.text_fn(batch["id"], batch["ir"].device)

    def fuse(self, batch, text, params: dict | None = None) -> torch.Tensor:
        """The net's output at the input size (the lower level's z, what its objective sees),
        optionally at `params` instead of its own parameters."""
        from fusionlab.models.fusion.base import fuse_raw

        if params is None:
            return fuse_raw(self.fusion_net, batch["ir"], batch["vi"], text)
        return torch.func.functional_call(_Fuse(self.fusion_net), {f"net.{n}": p for n, p in params.items()},
                                          (batch["ir"], batch["vi"], text))

    def lower(self, z, batch, text) -> dict:
        return self.objective(z.float(), batch, text)

    @staticmethod
    def rgb(z, batch) -> torch.Tensor:
        """What the detector sees: the fused image in RGB (Y-only nets take the visible image's colour)."""
        from fusionlab.models.fusion.base import as_rgb

        return as_rgb(z, batch["vi"])

    def to_detector(self, fused: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Resize (differentiably) so the long side is `imgsz`, pad to the stride; also the resized size."""
        from fusionlab.models.detector import pad_to_stride

        h, w = fused.shape[-2:]
        if self.imgsz and max(h, w) != self.imgsz:
            s = self.imgsz / max(h, w)
            fused = nn.functional.interpolate(fused, size=(round(h * s), round(w * s)), mode="bilinear",
                                              align_corners=False)
        size = tuple(fused.shape[-2:])
        stride = int(getattr(self.detector, "stride", torch.ones(1)).max())
        return pad_to_stride(fused, stride), size

    def detection_loss(self, fused: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """L_d(ω; z) with the boxes re-normalised to the detector's stride-padded canvas."""
        z, (h, w) = self.to_detector(fused)
        boxes = batch["boxes"].clone().float()
        ph, pw = z.shape[-2:]
        boxes[:, [2, 4]] *= w / pw
        boxes[:, [3, 5]] *= h / ph
        return self.criterion(self.detector(z), boxes)

    # ---------------------------------------------------------------- Lightning hooks
    def on_fit_start(self) -> None:
        if hasattr(self.objective, "to"):
            self.objective.to(self.device)

    def on_train_epoch_start(self) -> None:
        if hasattr(self.objective, "on_epoch_start"):
            self.objective.on_epoch_start(self.current_epoch)

    def training_step(self, batch, batch_idx):
        import time

        started = time.perf_counter()
        torch.manual_seed(step_seed(self.seed, self.global_step, self.global_rank))
        step = {"joint": self.joint_step, "alternating": self.alternating_step, "bilevel": self.bilevel_step}
        logs = step[self.mode](batch)
        self.timing["images"] += int(batch["ir"].shape[0])
        self.timing["seconds"] += time.perf_counter() - started
        self.steps_done += 1
        self.last_logs.update({k: float(v) for k, v in logs.items()})
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=batch["ir"].shape[0])

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["steps_done"] = self.steps_done  # keeps the alternating schedule on resume
        checkpoint["last_logs"] = dict(self.last_logs)

    def on_load_checkpoint(self, checkpoint) -> None:
        self.steps_done = int(checkpoint.get("steps_done", 0))
        self.last_logs = dict(checkpoint.get("last_logs", {}))

    def configure_optimizers(self):
        cfg = self.optim_cfg
        opt_f = torch.optim.Adam(list(self.fusion_params().values()), lr=cfg.lr_fusion)
        opt_d = torch.optim.AdamW(self.det_params(), lr=cfg.lr_detector, weight_decay=cfg.weight_decay)
        return [opt_f, opt_d]

    # ---------------------------------------------------------------- modes
    def joint_step(self, batch) -> dict:
        """Direct joint training: one summed loss F + w·L_d, both nets stepped on it."""
        return self.summed_step(batch, step_detector=True)

    def alternating_step(self, batch) -> dict:
        k = self.optim_cfg.k
        return self.fusion_step(batch) if self.steps_done % (k + 1) < k else self.detector_step(batch)

    def fusion_step(self, batch) -> dict:
        """Lower level on F + w·L_d with the detector held fixed (alternating)."""
        return self.summed_step(batch, step_detector=False)

    def summed_step(self, batch, step_detector: bool) -> dict:
        opt_f, opt_d = self.optimizers()
        text = self.text(batch)
        z = self.fuse(batch, text)
        lf = self.lower(z, batch, text)["total"]
        ld, _ = self.detection_loss(self.rgb(z, batch), batch)
        opt_f.zero_grad()
        opt_d.zero_grad()
        self.manual_backward(lf + self.optim_cfg.det_weight * ld)
        opt_f.step()
        if step_detector:  # (alternating: the detector's gradients of this backward are never used)
            opt_d.step()
        return {"loss_fusion": lf.detach(), "loss_det": ld.detach()}

    def detector_step(self, batch) -> dict:
        """Upper level on the current fused images; no gradient reaches the fusion net."""
        opt_f, opt_d = self.optimizers()
        text = self.text(batch)
        with torch.no_grad():
            fused = self.rgb(self.fuse(batch, text), batch)
        ld, _ = self.detection_loss(fused, batch)
        opt_f.zero_grad()
        opt_d.zero_grad()
        self.manual_backward(ld + _touch(self.fusion_params().values()))
        opt_d.step()
        return {"loss_det": ld.detach()}

    def bilevel_step(self, batch) -> dict:
        """Lower-level steps, the detector's step on z*, and the fusion step ∇F(φ₀) + w·h."""
        cfg = self.optim_cfg
        hg = cfg.hypergrad_spec()
        opt_f, opt_d = self.optimizers()
        text = self.text(batch)
        params = self.fusion_params()

        def F(p):
            return self.lower(self.fuse(batch, text, p), batch, text)["total"]

        with frozen_features_once(self.fusion_net):
            solution = solve_lower(F, params, hg)
            z_star = self.rgb(self.fuse(batch, text, solution.last), batch)  # z* as the detector sees it
            z_in = z_star.detach().requires_grad_(True)
            ld, _ = self.detection_loss(z_in, batch)
            (dz,) = torch.autograd.grad(ld, [z_in], retain_graph=True)
            v = torch.autograd.grad(z_star, list(solution.last.values()), grad_outputs=dz, allow_unused=True)
            v = mean_over_ranks([torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), v, strict=True)])
            h = hypergradient(F, solution, v, hg)
        start, last = solution.iterates[0].values(), solution.last.values()
        shift = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(start, last, strict=True)).detach())
        fusion_grad = [g0 + cfg.det_weight * hi for g0, hi in zip(solution.grad0, h, strict=True)]
        surrogate = sum(((p * g.to(p.dtype)).sum() for p, g in zip(params.values(), fusion_grad, strict=True)),
                        torch.zeros((), device=ld.device))
        opt_f.zero_grad()
        opt_d.zero_grad()
        self.manual_backward(ld + surrogate)  # ω: ∇L_d(ω; z*); φ: ∇F(φ₀) + w·h (same on every rank)
        opt_f.step()
        opt_d.step()
        return {"loss_fusion": solution.value0, "loss_det": ld.detach(), "lower_shift": shift,
                "hypergrad_norm": torch.sqrt(sum((hi ** 2).sum() for hi in h))}
