"""Stage 4: train the fusion network of a method preset, then fuse the eval split and score it.

A preset (`stages/presets/<name>.yaml`, chosen by `preset:`) names the network and the losses of
one paper; `expand_config` merges it under the stage YAML, so any key can still be overridden.
Every preset has `text_guidance: on|off`, `ldnf` also `depth_loss: on|off` (the papers' ablations).

Upstream artifacts are read, never recomputed: caption embeddings come from stage 3's cache by
sample id (no text encoder call while training), the frozen depth nets from stage 1, the
denoiser from stage 2. Only `ldfusion` runs a model of stage 3 (its `clip/`), because its loss
lives in CLIP space; that is training-only, the saved network never needs CLIP.

Outputs: `fusion/` (save_fusion_model: what `fusionlab fuse` loads), `fused/` (PNG per eval
image, same stem as the input) and `eval/` (metric tables: metrics.json, per_image.csv, metrics.md).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from fusionlab.config import Section
from fusionlab.data.config import DataConfig
from fusionlab.errors import ConfigError, PipelineError
from fusionlab.stages.base import StageConfig, StageContext

OUTPUTS = ("fusion", "fused", "eval")
HEADLINE = ("eval/EN", "eval/SD", "eval/SF", "eval/MI", "eval/VIF", "eval/Qabf", "eval/SSIM")
PRESETS = ("baseline", "ldnf", "text2pixels", "ldfusion", "tgif")
PRESET_DIR = Path(__file__).resolve().parents[2] / "stages" / "presets"
TEXT_PRESETS = ("ldnf", "text2pixels", "tgif")  # networks that read caption embeddings


# --------------------------------------------------------------------------- config


class BaselineLoss(Section):
    w_int: float = 1.0
    w_grad: float = 1.0
    w_ssim: float = 1.0


class LDNFLoss(Section):
    mci: float = 1.0          # L_MCI (eq. 10)
    mcg: float = 1.0          # L_MCG (eq. 9)
    depth: float = 0.1        # depth-driven SiLog weight (used when depth_loss is on)
    silog_lambda: float = 1.0  # λ of SiLog; 1 = eq. 1 of the paper
    depth_scale: float = 1.0  # run the frozen depth nets at this fraction of the resolution (CPU budget)


class Text2PixelsLoss(Section):
    structure: bool = True    # L_str against the previous epoch's output (the "sl" ablation)
    content: bool = True      # saliency-weighted L_cc (the "cl" ablation)
    codebook: float = 1.0     # weight of g(z) (eq. 11)


class LDFusionLoss(Section):
    lam: float = 0.5                      # λ of Φ (eq. 10)
    alpha: float = 1.0                    # α of the VGG feature-fidelity loss (eq. 16)
    n_patches: int = 4                    # random patches per image
    patch_px: tuple[int, int] = (112, 180)  # patch sizes for 224 px crops; scaled for smaller images
    min_entropy: float = 6.0              # σ of the patch filter (bits)
    affine_degrees: float = 10.0
    vgg_pretrained: str | None = None     # torchvision weights name (IMAGENET1K_V1), local file, or null
    vgg_layers: tuple[int, ...] = (3, 5, 10)


class TGIFLoss(Section):
    grad_weight: float = 20.0  # α₁; α₂ (SSIM) = 0 in the paper's IVF setting


class LossConfig(Section):
    baseline: BaselineLoss = BaselineLoss()
    ldnf: LDNFLoss = LDNFLoss()
    text2pixels: Text2PixelsLoss = Text2PixelsLoss()
    ldfusion: LDFusionLoss = LDFusionLoss()
    tgif: TGIFLoss = TGIFLoss()


class InputsConfig(Section):
    """Upstream artifacts (`${stage.outputs.name}` in the YAML); a preset needs only some."""

    depth_ir: str | None = None
    depth_vis: str | None = None
    denoiser: str | None = None
    embeddings: str | None = None
    clip: str | None = None
    prompts: str | None = None


class OptimConfig(Section):
    lr: float = 1e-3
    weight_decay: float = 0.0
    step_epochs: int | None = None  # halve the learning rate every this many epochs (None: constant)


class EvalConfig(Section):
    convention: Literal["cddfuse", "matlab"] = "cddfuse"
    metrics: list[str] = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM"]
    panels: int = 4  # IR | VIS | fused image panels logged to W&B


class Config(StageConfig):
    data: DataConfig
    preset: Literal["baseline", "ldnf", "text2pixels", "ldfusion", "tgif"] = "ldnf"
    text_guidance: bool = True
    depth_loss: bool = True  # ldnf only
    model: dict[str, Any] = {}  # constructor kwargs of the preset's network (fusionlab.models.fusion)
    loss: LossConfig = LossConfig()
    inputs: InputsConfig = InputsConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset_file(name: str) -> Path:
    return PRESET_DIR / f"{name}.yaml"


def expand_config(raw: dict) -> dict:
    """Merge `stages/presets/<preset>.yaml` under the stage config (the stage's keys win)."""
    from fusionlab.config import load_yaml

    name = raw.get("preset", Config.model_fields["preset"].default)
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(str(name), PRESETS, n=1)
        raise ConfigError(f"preset: unknown preset '{name}'" + (f", did you mean '{close[0]}'?" if close else "")
                          + f" (choose one of {', '.join(PRESETS)})")
    path = preset_file(name)
    if not path.is_file():
        raise ConfigError(f"preset '{name}': preset file '{path}' is missing (reinstall fusionlab from the repository)")
    preset = load_yaml(path)
    preset.pop("preset", None)
    merged = _merge(preset, raw)
    if name in TEXT_PRESETS and merged.get("text_guidance", True) is not False:
        # a flip makes a caption's "left"/"right" wrong; the papers use none (docs/stages/captions.md)
        merged.setdefault("data", {}).setdefault("flip", False)
    return merged


def pretrained_parts(cfg: Config) -> list:
    """Pretrained parts (fusionlab.provenance): ldfusion's VGG-19, and stage 3's CLIP wherever it is used."""
    from fusionlab.losses.perceptual import vgg19_source
    from fusionlab.provenance import Part, upstream_clip_part

    parts, vgg = [], cfg.loss.ldfusion.vgg_pretrained
    if cfg.preset == "ldfusion":
        parts.append(Part("VGG-19", "loss.ldfusion.vgg_pretrained", vgg, "LDFusion's feature-fidelity loss L_v",
                          "L_v matches random features, not ImageNet ones", source=vgg19_source(vgg) if vgg else None))
    clip = cfg.inputs.clip or (str(Path(cfg.inputs.embeddings).parent / "clip") if cfg.inputs.embeddings else None)
    if clip and (uses_text(cfg) or (cfg.preset == "ldfusion" and cfg.text_guidance)):
        role = "LDFusion's language-driven loss" if cfg.preset == "ldfusion" else "text guidance"
        parts.append(upstream_clip_part(clip, "inputs.clip", role))
    return parts


# --------------------------------------------------------------------------- helpers


def _require(path: str | None, key: str, why: str) -> str:
    if not path:
        raise ConfigError(f"inputs.{key}: {why} needs it; set it to the upstream artifact "
                          f"(e.g. `inputs.{key}=<run_dir>/<stage>/{key}`) or switch the option off")
    if not Path(path).exists():
        raise PipelineError(f"inputs.{key}: '{path}' does not exist; run the upstream stage first or fix the path")
    return path


def uses_text(cfg: Config) -> bool:
    return cfg.text_guidance and cfg.preset in TEXT_PRESETS


def text_dims(embeddings: str) -> tuple[int, int]:
    """(pooled dim, token dim) of the stage-3 cache."""
    from fusionlab.cache import EmbeddingCache

    cache = EmbeddingCache(embeddings)
    if not len(cache):
        raise PipelineError(f"embedding cache '{embeddings}' is empty; rerun stage 3 on this dataset")
    row = cache.get(cache.ids[:1])
    return int(row["pooled"].shape[-1]), int(row["tokens"].shape[-1])


def build_net(cfg: Config):
    """The preset's network, with the dimensions its inputs dictate."""
    from fusionlab.models.fusion import build_fusion_model

    kwargs = dict(cfg.model)
    kwargs.pop("name", None)
    if cfg.preset != "baseline":
        kwargs["text_guidance"] = cfg.text_guidance
    if uses_text(cfg):
        pooled_dim, token_dim = text_dims(_require(cfg.inputs.embeddings, "embeddings", f"{cfg.preset} with text_guidance"))
        kwargs.setdefault("text_dim" if cfg.preset == "ldnf" else "token_dim", pooled_dim if cfg.preset == "ldnf" else token_dim)
    if cfg.preset == "ldnf" and kwargs.get("features", "diffusion") == "diffusion":
        from fusionlab.models.fusion.ldnf import LDNF

        return LDNF.from_denoiser(_require(cfg.inputs.denoiser, "denoiser", "ldnf (diffusion features)"), **kwargs)
    return build_fusion_model({"name": cfg.preset, **kwargs})


# --------------------------------------------------------------------------- training


class FusionTraining(L.LightningModule):
    """One preset's network and objective. Frozen helpers (depth nets, CLIP, VGG, the previous
    epoch's network) are kept out of the state dict: they are inputs, not results."""

    def __init__(self, config: dict, net=None):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = Config.model_validate(config)
        self.net = net if net is not None else build_net(self.cfg)
        self._helpers: dict[str, Any] = {}
        self._cache = None
        self._build_helpers()

    # ---------------------------------------------------------------- frozen helpers

    def _build_helpers(self) -> None:
        cfg = self.cfg
        if cfg.preset == "ldnf" and cfg.depth_loss:
            from fusionlab.losses.depth_loss import DepthDrivenLoss
            from fusionlab.models.depth import load_depth_estimator

            self._helpers["depth"] = DepthDrivenLoss(
                load_depth_estimator(_require(cfg.inputs.depth_ir, "depth_ir", "ldnf with depth_loss")),
                load_depth_estimator(_require(cfg.inputs.depth_vis, "depth_vis", "ldnf with depth_loss")),
                lam=cfg.loss.ldnf.silog_lambda, scale=cfg.loss.ldnf.depth_scale)
        if cfg.preset == "ldfusion":
            from fusionlab.losses.perceptual import FeatureFidelityLoss

            lc = cfg.loss.ldfusion
            self._helpers["vgg"] = FeatureFidelityLoss(lc.vgg_pretrained, tuple(lc.vgg_layers), key="loss.ldfusion.vgg_pretrained")
            if cfg.text_guidance:
                from safetensors.torch import load_file

                from fusionlab.losses.language import LanguageLoss
                from fusionlab.models.text import ClipEncoder

                clip = ClipEncoder.from_config(_require(cfg.inputs.clip, "clip", "ldfusion's language loss"))
                prompts = load_file(_require(cfg.inputs.prompts, "prompts", "ldfusion's language loss"))
                self._helpers["language"] = LanguageLoss(
                    clip.encode_image, prompts, lam=lc.lam, n_patches=lc.n_patches, min_entropy=lc.min_entropy,
                    patch_px=tuple(lc.patch_px), affine_degrees=lc.affine_degrees)
                self._helpers["clip"] = clip
        if uses_text(cfg):
            from fusionlab.cache import EmbeddingCache

            self._cache = EmbeddingCache(_require(cfg.inputs.embeddings, "embeddings", f"{cfg.preset} with text_guidance"))

    def on_fit_start(self) -> None:
        for helper in self._helpers.values():
            if isinstance(helper, torch.nn.Module):
                helper.to(self.device).eval().requires_grad_(False)

    def text_for(self, ids: list[str]) -> dict | None:
        if self._cache is None:
            return None
        return self._cache.get(ids, self.device)

    # ---------------------------------------------------------------- text2pixels: z′

    def on_train_epoch_start(self) -> None:
        if self.cfg.preset == "text2pixels" and self.current_epoch > 0:
            from fusionlab.models.fusion import build_fusion_model

            prev = build_fusion_model(dict(self.net.config))
            prev.load_state_dict(self.net.state_dict())
            self._helpers["previous"] = prev.to(self.device).eval().requires_grad_(False)

    # ---------------------------------------------------------------- objectives

    def objective(self, fused: torch.Tensor, batch: dict, text: dict | None) -> dict[str, torch.Tensor]:
        return getattr(self, f"_loss_{self.cfg.preset}")(fused, batch, text)

    def _loss_baseline(self, fused, batch, text):
        from fusionlab.losses import ContentLoss

        lc = self.cfg.loss.baseline
        # targets stretched exactly as the net stretches its input (model.stretch; 0 = off)
        loss = ContentLoss(lc.w_int, lc.w_grad, lc.w_ssim, stretch=self.net.stretch)
        total, parts = loss(fused, batch["ir"], self.net.luma(batch["vi"]))
        return {"total": total, **parts}

    def _loss_ldnf(self, fused, batch, text):
        from fusionlab.losses.mci_mcg import mcg_loss, mci_loss

        lc = self.cfg.loss.ldnf
        ir, vi = batch["ir"], batch["vi"]
        parts = {"mci": mci_loss(fused, ir, vi), "mcg": mcg_loss(fused, ir, vi)}
        total = lc.mci * parts["mci"] + lc.mcg * parts["mcg"]
        if "depth" in self._helpers:
            depth = self._helpers["depth"](fused, ir, vi, batch.get("depth"))
            parts["depth"] = depth["total"]
            total = total + lc.depth * depth["total"]
        return {"total": total, **parts}

    def _loss_text2pixels(self, fused, batch, text):
        from fusionlab.losses.saliency import content_consistency_loss
        from fusionlab.losses.structure import alpha_weights, structure_loss

        lc = self.cfg.loss.text2pixels
        ir, y = batch["ir"], self.net.luma(batch["vi"])
        prev = None
        if lc.structure and "previous" in self._helpers:
            with torch.no_grad():
                prev = self._helpers["previous"](ir, batch["vi"], text)
        a1, a2 = alpha_weights(fused, prev, ir, y)
        parts: dict[str, torch.Tensor] = {"alpha1": a1, "alpha2": a2}
        total = fused.new_zeros(())
        if prev is not None:
            parts["structure"] = structure_loss(fused, prev)
            total = total + a1 * parts["structure"]
        if lc.content:
            parts["content"] = content_consistency_loss(fused, ir, y)
            total = total + a2 * parts["content"]
        if "codebook" in self.net.aux_losses:
            parts["codebook"] = self.net.aux_losses["codebook"]
            total = total + lc.codebook * parts["codebook"]
        return {"total": total, **parts}

    def _loss_ldfusion(self, fused, batch, text):
        lc = self.cfg.loss.ldfusion
        ir, y = batch["ir"], self.net.luma(batch["vi"])
        parts = {"fidelity": self._helpers["vgg"](fused, ir, y)}
        total = lc.alpha * parts["fidelity"]
        if "language" in self._helpers:
            lang = self._helpers["language"](fused, ir, y)
            parts.update({"dir": lang["dir"], "phi": lang["phi"], "language": lang["total"],
                          "patches_kept": lang["patches_kept"]})
            total = total + lang["total"]
        return {"total": total, **parts}

    def _loss_tgif(self, fused, batch, text):
        from fusionlab.losses.tgif import tgif_loss

        parts = tgif_loss(fused, batch["ir"], self.net.luma(batch["vi"]), self.cfg.loss.tgif.grad_weight)
        return {"total": parts.pop("total"), **parts}

    # ---------------------------------------------------------------- Lightning

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        text = self.text_for(batch["id"])
        fused = self.net(batch["ir"], batch["vi"], text)
        parts = self.objective(fused.float(), batch, text)
        bs = batch["ir"].shape[0]
        self.log("train/loss", parts["total"], prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        for name, value in parts.items():
            if name != "total":
                self.log(f"train/{name}", value.detach().float(), on_step=False, on_epoch=True, batch_size=bs)
        return parts["total"]

    def configure_optimizers(self):
        oc = self.cfg.optim
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=oc.lr, weight_decay=oc.weight_decay)
        if not oc.step_epochs:
            return opt
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, oc.step_epochs, gamma=0.5)}


class LossHistory(L.Callback):
    """Per-epoch means of the training loss and its terms (shows that training converged)."""

    def __init__(self):
        self.epochs: list[float] = []
        self.terms: dict[str, list[float]] = {}

    def on_train_epoch_end(self, trainer, module) -> None:
        for key, value in trainer.callback_metrics.items():
            if key == "train/loss_epoch":
                self.epochs.append(round(float(value), 6))
            elif key.startswith("train/") and not key.startswith("train/loss"):
                self.terms.setdefault(key[len("train/"):], []).append(round(float(value), 6))


# --------------------------------------------------------------------------- evaluation


def _panel(ir: torch.Tensor, vi: torch.Tensor, fused: torch.Tensor):
    """IR | VIS | fused side by side, [H, 3W, 3] uint8."""
    row = torch.cat([ir.expand(3, -1, -1), vi, fused], dim=2)
    return (row.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


REFERENCES = ("ir", "vis", "mean", "max")  # simple fusions every method should beat


def reference_fusions(ir_gray: torch.Tensor, vi_gray: torch.Tensor) -> dict[str, torch.Tensor]:
    """Trivial fusions of the two gray (0..255) sources, scored beside the trained network."""
    return {"ir": ir_gray, "vis": vi_gray, "mean": ((ir_gray + vi_gray) / 2).round(), "max": torch.maximum(ir_gray, vi_gray)}


class DepthProbe:
    """Depth error of the frozen stage-1 nets on IR, VIS and fused inputs (the ldnf claim:
    fused images carry better depth cues). Active only when both nets and GT depth exist."""

    def __init__(self, cfg: Config):
        from fusionlab.metrics.depth import DepthMetrics
        from fusionlab.models.depth import load_depth_estimator

        self.nets = {}
        if cfg.inputs.depth_ir and cfg.inputs.depth_vis and Path(cfg.inputs.depth_ir).exists() \
                and Path(cfg.inputs.depth_vis).exists():
            self.nets = {"ir": load_depth_estimator(cfg.inputs.depth_ir), "vis": load_depth_estimator(cfg.inputs.depth_vis)}
        # (input name, net, which image) -> metric state
        self.pairs = {"ir": ("ir", "ir"), "vis": ("vis", "vi"), "fused-ir-net": ("ir", "fused"),
                      "fused-vis-net": ("vis", "fused")}
        self.metrics = {name: DepthMetrics() for name in self.pairs}

    def update(self, batch: dict, fused_rgb: torch.Tensor) -> None:
        if not self.nets or batch.get("depth") is None:
            return
        images = {"ir": batch["ir"], "vi": batch["vi"], "fused": fused_rgb}
        with torch.no_grad():
            for name, (net, image) in self.pairs.items():
                # the IR net takes the fused RGB image through its own adapt_channels (Y)
                self.metrics[name].update(self.nets[net](images[image]), batch["depth"])

    def compute(self) -> dict[str, float]:
        if not self.nets or all(m.images == 0 for m in self.metrics.values()):
            return {}
        keep = ("AbsRel", "RMSE", "delta1")
        return {f"depth/{name}/{k}": float(v) for name, m in self.metrics.items()
                for k, v in m.compute().items() if k in keep}


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if math.isfinite(r[key])]
    return sum(values) / len(values) if values else float("nan")


def evaluate(net, datamodule, ctx: StageContext, cfg: Config, cache=None) -> dict:
    """Fuse the eval split into `fused/`, score it (and the simple references) into `eval/`,
    probe depth on IR / VIS / fused, log panels; returns the metrics for the manifest."""
    from tqdm import tqdm

    from fusionlab.artifacts import atomic_dir, atomic_write_json, atomic_write_text
    from fusionlab.data.io import write_image
    from fusionlab.metrics.functional import fusion_metrics
    from fusionlab.metrics.gray import to_gray255
    from fusionlab.models.fusion import fuse_rgb

    device = next(net.parameters()).device
    net.eval()
    rows: list[dict] = []
    ref_rows: dict[str, list[dict]] = {name: [] for name in REFERENCES}
    depth = DepthProbe(cfg)
    panels = []
    with atomic_dir(ctx.output("fused")) as fused_dir, torch.no_grad():
        for batch in tqdm(datamodule.eval_dataloader(), desc="fuse eval split", leave=False):
            text = None
            if net.needs_text and cache is not None:
                text = cache.get(batch["id"], device)
            ir, vi = batch["ir"].to(device), batch["vi"].to(device)
            fused = fuse_rgb(net, ir, vi, text).float().cpu()
            fused = (fused * 255).round() / 255  # score exactly what is written
            ir_gray, vi_gray = to_gray255(batch["ir"]), to_gray255(batch["vi"])
            def score(img, ir_gray=ir_gray, vi_gray=vi_gray):
                return fusion_metrics(img, ir_gray, vi_gray, convention=cfg.eval.convention, metrics=cfg.eval.metrics)

            scores = score(to_gray255(fused))
            for name, ref in reference_fusions(ir_gray, vi_gray).items():
                ref_scores = score(ref)
                ref_rows[name] += [{k: float(v[i]) for k, v in ref_scores.items()} for i in range(len(batch["id"]))]
            depth.update(batch, fused)
            for i, sample_id in enumerate(batch["id"]):
                write_image(Path(fused_dir) / f"{sample_id}.png", fused[i])
                rows.append({"id": sample_id, **{k: float(v[i]) for k, v in scores.items()}})
                if len(panels) < cfg.eval.panels:
                    panels.append((sample_id, _panel(batch["ir"][i], batch["vi"][i], fused[i])))
    if not rows:
        raise PipelineError("the eval split is empty: nothing to fuse")
    names = [k for k in rows[0] if k != "id"]
    mean = {k: _mean(rows, k) for k in names}
    references = {name: {k: _mean(r, k) for k in names} for name, r in ref_rows.items()}
    depth_scores = depth.compute()
    summary = {"preset": cfg.preset, "convention": cfg.eval.convention, "images": len(rows), "mean": mean,
               "references": references, "depth": depth_scores}
    with atomic_dir(ctx.output("eval")) as eval_dir:
        eval_dir = Path(eval_dir)
        atomic_write_json(eval_dir / "metrics.json", summary)
        csv = ["id," + ",".join(names)] + [r["id"] + "," + ",".join(f"{r[k]:.6f}" for k in names) for r in rows]
        atomic_write_text(eval_dir / "per_image.csv", "\n".join(csv) + "\n")
        table = [(cfg.preset, mean), *((f"reference: {n}", v) for n, v in references.items())]
        md = [f"# {cfg.preset}: {len(rows)} eval images ({cfg.eval.convention} convention)", "",
              "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
              *("| " + label + " | " + " | ".join(f"{v[k]:.4f}" for k in names) + " |" for label, v in table)]
        atomic_write_text(eval_dir / "metrics.md", "\n".join(md) + "\n")
    run = ctx.wandb_run()
    if run is not None:
        import wandb

        run.log({"eval/panels": [wandb.Image(img, caption=f"{sid}: IR | VIS | fused") for sid, img in panels],
                 **{f"eval/{k}": v for k, v in mean.items()}})
    out = {f"eval/{k}": v for k, v in mean.items()}
    out.update({f"ref/{n}/{k}": v for n, vals in references.items() for k, v in vals.items()})
    out.update(depth_scores)
    return out


# --------------------------------------------------------------------------- stage entry point


def run(cfg: Config, ctx: StageContext) -> dict:
    from fusionlab.data.datamodule import FusionDataModule
    from fusionlab.models.fusion import save_fusion_model

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = FusionTraining(cfg.model_dump(mode="json"))
    datamodule = FusionDataModule(cfg.data)
    datamodule.require_eval_split()  # the stage ends by fusing and scoring it
    history = LossHistory()
    trainer = ctx.make_trainer(cfg.trainer, name="fusion", callbacks=[history])
    ctx.fit(trainer, module, datamodule, name="fusion")
    metrics: dict[str, Any] = {"train/loss_epochs": history.epochs, "train/terms": history.terms}
    if history.epochs:
        metrics["train/loss_first"], metrics["train/loss_last"] = history.epochs[0], history.epochs[-1]
    if not ctx.is_global_zero:
        return metrics
    net = module.net.float().eval()
    save_fusion_model(ctx.output("fusion"), net, extra={
        "preset": cfg.preset, "text_guidance": cfg.text_guidance,
        "depth_loss": cfg.depth_loss if cfg.preset == "ldnf" else None,
        "needs_text": bool(net.needs_text), "train": {k: v for k, v in metrics.items() if k not in ("train/loss_epochs", "train/terms")}})
    scores = evaluate(net, datamodule, ctx, cfg, cache=module._cache)
    metrics.update({k: (round(v, 6) if math.isfinite(v) else None) for k, v in scores.items()})
    return metrics
