"""Stage `captions` (3): captions from deployed evidence and the CLIP embedding cache stage 4 reads.

For every sample it writes IR and VIS captions made only from what a deployed system has: the two
images, the stage-1 nets' *predicted* depth and, optionally, a detector's predictions (LDNF III-C,
TGIF's detection map); ground-truth boxes, depth and scene descriptions never reach the captioner
(`captioner.deployed_inputs`). It encodes their concatenation with CLIP into `embeddings/`
(pooled feature, token sequence and mask, keyed by sample id), encodes the fixed LDFusion prompt
set into `prompts.safetensors`, and saves the CLIP model itself as `clip/` so stage 4 works in the
same space. With `data.val_root` set, both folders are captioned (e.g. RoadScene train/ + test/).
Nothing is trained. Both passes (captioning, encoding) run through `trainer.predict`, so under
DDP each rank handles a disjoint part and rank 0 merges; a rerun encodes nothing already cached.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from pydantic import Field

from fusionlab.config import Section
from fusionlab.data.config import DataConfig
from fusionlab.models.captioner import CaptionerConfig
from fusionlab.models.text import ClipConfig
from fusionlab.stages.base import StageConfig, StageContext

OUTPUTS = ("captions.jsonl", "embeddings", "prompts.safetensors", "clip", "captions.html", "captions.md", "thumbs")
HEADLINE = ("captions", "encoded", "cache_hits", "depth_mention_rate")
REUSE = ("embeddings",)  # a rerun's staging folder starts from the last good cache (pipeline/staging.py)
DEFAULT_PROMPTS = {
    "ir": "an infrared image",
    "vis": "a visible gray image",
    "fused": "a clear image with detailed background and salient objects",
}
DEPTH_WORDS = ("near", "mid", "far", "distant", "close")


class ModelConfig(Section):
    captioner: CaptionerConfig = CaptionerConfig()
    clip: ClipConfig = ClipConfig()
    prompts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PROMPTS))  # name -> text (LDFusion 3.2-3.3)
    preview: int = Field(8, ge=0)  # samples shown on captions.html / captions.md


class Config(StageConfig):
    data: DataConfig
    model: ModelConfig = ModelConfig()


# ---------------------------------------------------------------------------- Lightning wrappers


class CaptionModule(L.LightningModule):
    """predict_step = caption a batch; the captioner's nets are submodules so Lightning places them."""

    def __init__(self, captioner):
        super().__init__()
        self.captioner = captioner
        template = getattr(captioner, "template", captioner)
        self.nets = torch.nn.ModuleList(
            [m for m in (getattr(template, "depth_ir", None), getattr(template, "depth_vis", None),
                         getattr(template, "detector", None), getattr(captioner, "model", None))
             if isinstance(m, torch.nn.Module)]
        )

    def predict_step(self, batch, batch_idx):
        from fusionlab.models.captioner import deployed_inputs

        inputs = deployed_inputs(batch)  # images and ids only: no label reaches a caption
        return [{"id": i, **rec} for i, rec in zip(inputs["id"], self.captioner.caption(inputs), strict=True)]


class EncodeModule(L.LightningModule):
    """predict_step = encode a batch of cache sources with CLIP (always in float32)."""

    def __init__(self, encoder, encode_fn):
        super().__init__()
        self.encoder = encoder
        self.encode_fn = encode_fn

    def predict_step(self, batch, batch_idx):
        # Full precision whatever trainer.precision says: cached entries must not depend on it
        # (the fingerprint does not record it, and `cache verify --repair` encodes in fp32).
        with torch.autocast(device_type=self.device.type, enabled=False):
            out = self.encode_fn(batch["source"])
        return {i: {k: v[j].detach().cpu() for k, v in out.items()} for j, i in enumerate(batch["id"])}


def _collate_sources(items):
    return {"id": [i for i, _ in items], "source": [s for _, s in items]}


def _gather(values: list) -> list:
    """Concatenate every rank's list (identity without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    buckets: list = [None] * dist.get_world_size()
    dist.all_gather_object(buckets, values)
    return [v for bucket in buckets for v in bucket]


def _barrier(trainer) -> None:
    if trainer.world_size > 1:
        trainer.strategy.barrier()


# ---------------------------------------------------------------------------- steps


def pretrained_parts(cfg: Config) -> list:
    """CLIP, the captioner and its detector (fusionlab.provenance); the depth nets come from stage 1."""
    from fusionlab.provenance import Part, clip_part
    from fusionlab.weights import hub_source, ultralytics_source

    cap = cfg.model.captioner
    parts = [clip_part(cfg.model.clip)]
    if cap.kind == "blip" and cap.pretrained:  # (without `pretrained` the captioner says it is required)
        parts.append(Part("BLIP captioner", "model.captioner.pretrained", cap.pretrained, "captioning", "",
                          source=hub_source(cap.pretrained), instead="model.captioner.kind=depth-template (rules, no weights)"))
    elif cap.kind == "depth-template":
        parts.append(Part("depth-template captioner (rules, a stand-in for the papers' captioners)",
                          "model.captioner.kind", cap.kind, "captioning", "", has_weights=False))
    if cap.kind != "file" and cap.detector:
        parts.append(Part("YOLO detector (caption objects)", "model.captioner.detector", cap.detector,
                          "the captions' object words", "", source=ultralytics_source(cap.detector)))
    return parts


def _datasets(cfg: Config) -> list:
    """The folders to caption: `data.root` (max_samples applied), and `data.val_root` when set."""
    from fusionlab.data.datamodule import FusionDataModule
    from fusionlab.errors import DataError

    dm = FusionDataModule(cfg.data)
    sets = [dm.open_split(cfg.data.root, cfg.data.split)]
    if cfg.data.val_root:
        sets.append(dm.open_split(cfg.data.val_root, cfg.data.val_split))
        clash = sorted(set(sets[0].ids) & set(sets[1].ids))
        if clash:
            raise DataError(f"data.root and data.val_root share sample ids ({', '.join(clash[:3])}); the embedding "
                            "cache is keyed by id, so rename them or caption the folders in two stages")
    return sets


def _refuse_dataset_captions(cfg: Config) -> None:
    """A dataset's own captions.jsonl may be ground truth (the synthetic scenes write theirs from the
    scene description): never a model input unless the user copies it out on purpose."""
    from fusionlab.errors import ConfigError

    path = cfg.model.captioner.path
    if cfg.model.captioner.kind != "file" or not path:
        return
    roots = [r for r in (cfg.data.root, cfg.data.val_root) if r]
    if any(Path(path).resolve() == (Path(r) / "captions.jsonl").resolve() for r in roots):
        raise ConfigError(f"model.captioner.path '{path}' is the dataset's own captions.jsonl, which may describe "
                          "ground truth (the synthetic scenes write theirs from the labels); captions a model reads "
                          "must come from deployed evidence. If these are real inputs of your method (e.g. human "
                          "prompts), copy the file elsewhere and point the key there.")


def caption_all(cfg: Config, ctx: StageContext, trainer, ds, indices: list[int]) -> list[dict]:
    """Captions for every sample, in dataset order (each rank captions its part, then all gather)."""
    from torch.utils.data import DataLoader, Subset

    from fusionlab.data.collate import collate_samples
    from fusionlab.models.captioner import build_captioner

    captioner = build_captioner(cfg.model.captioner)
    batch_size = cfg.data.batch_size if ds.uniform_size else 1
    loader = DataLoader(Subset(ds, indices), batch_size=batch_size, shuffle=False, num_workers=cfg.data.num_workers,
                        collate_fn=collate_samples)
    batches = trainer.predict(CaptionModule(captioner), dataloaders=loader) or []
    records = {r["id"]: r for r in _gather([r for b in batches for r in b])}
    return [records[ds.ids[i]] for i in indices]


def encode_cache(trainer, cache_dir: Path, sources: dict[str, dict], encoder, encode_fn, *, kind: str,
                 batch_size: int, extra: dict) -> dict:
    """Bring one cache up to date: plan on every rank, encode the stale part, rank 0 merges."""
    from torch.utils.data import DataLoader

    from fusionlab.cache.build import merge, plan, write_part

    fingerprint = encoder.fingerprint()
    the_plan = plan(cache_dir, sources, fingerprint)
    _barrier(trainer)  # every rank has read the old index before rank 0 replaces it
    if the_plan.stale:
        items = [(i, sources[i]) for i in the_plan.stale]
        loader = DataLoader(items, batch_size=batch_size, shuffle=False, collate_fn=_collate_sources)
        outputs = trainer.predict(EncodeModule(encoder, encode_fn), dataloaders=loader) or []
        rows = {k: v for batch in outputs for k, v in batch.items()}
        write_part(cache_dir, trainer.global_rank, rows)
        _barrier(trainer)
    if trainer.is_global_zero:
        merge(cache_dir, sources, fingerprint, {}, kind=kind, extra=extra, the_plan=the_plan)
    _barrier(trainer)
    return {"total": len(sources), "hits": len(sources) - len(the_plan.stale), "computed": len(the_plan.stale),
            "repaired_shards": sorted(the_plan.bad_shards)}


def write_prompts(path: Path, encoder, prompts: dict[str, str]) -> bool:
    """prompts.safetensors: name -> [D] normalised text feature; skipped (no encoder call) if current."""
    from safetensors import safe_open
    from safetensors.torch import save

    from fusionlab.artifacts import atomic_write_bytes
    from fusionlab.cache.store import digest

    key = digest({"encoder": encoder.fingerprint(), "prompts": prompts})
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as fh:
                if (fh.metadata() or {}).get("key") == key:
                    return False
        except Exception:  # unreadable: rewrite it
            pass
    names = list(prompts)
    pooled = encoder.encode_text([prompts[n] for n in names])[0]
    tensors = {n: pooled[i].contiguous() for i, n in enumerate(names)}
    meta = {"key": key, "prompts": json.dumps(prompts), "model": encoder.name}
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return True


def save_clip(path: Path, encoder) -> None:
    """Write `clip/` unless it already holds these exact weights."""
    config = path / "config.json"
    if config.is_file():
        try:
            if json.loads(config.read_text()).get("weights_sha256") == encoder.weights_hash and (path / "model.safetensors").is_file():
                return
        except (OSError, json.JSONDecodeError):
            pass
    encoder.save(path)


def write_preview(ctx: StageContext, items: list[tuple], records: list[dict], count: int) -> list[dict]:
    """captions.html + captions.md with IR/VIS thumbnails (thumbs/), so a person can judge the captions.

    `items[k]` is the (dataset, index) of `records[k]`."""
    import html

    import torch.nn.functional as F

    from fusionlab.artifacts import atomic_dir, atomic_write_text
    from fusionlab.data.io import write_image

    count = min(count, len(items))
    picks = [round(k * (len(items) - 1) / max(count - 1, 1)) for k in range(count)] if count else []
    shown = []
    with atomic_dir(ctx.output("thumbs")) as tmp:
        for k in dict.fromkeys(picks):
            ds, index = items[k]
            sample = ds[index]
            for name, img in (("ir", sample.ir), ("vi", sample.vi)):
                scale = min(1.0, 192 / img.shape[-1])
                small = F.interpolate(img[None], scale_factor=scale, mode="area")[0] if scale < 1 else img
                write_image(tmp / f"{sample.id}_{name}.png", small)
            shown.append(records[k])
    rows_md = ["# Stage 3 captions", "", f"{len(records)} samples; {len(shown)} shown. The caption CLIP encodes is "
               "the IR caption followed by the VIS caption.", "", "| id | IR | VIS | caption |", "|---|---|---|---|"]
    rows_html = ["<!doctype html><meta charset='utf-8'><title>Stage 3 captions</title>",
                 "<style>body{font-family:sans-serif}td{vertical-align:top;padding:4px}img{width:160px}</style>",
                 f"<h1>Stage 3 captions</h1><p>{len(records)} samples; {len(shown)} shown.</p>",
                 "<table><tr><th>id</th><th>IR</th><th>VIS</th><th>IR caption</th><th>VIS caption</th></tr>"]
    for rec in shown:
        sid = rec["id"]
        rows_md.append(f"| {sid} | ![](thumbs/{sid}_ir.png) | ![](thumbs/{sid}_vi.png) | {rec['caption'].replace('|', '/')} |")
        ir_text, vi_text = (rec["caption_ir"], rec["caption_vi"]) if rec["caption_ir"] or rec["caption_vi"] else (rec["caption"], "")
        rows_html.append(f"<tr><td>{html.escape(sid)}</td><td><img src='thumbs/{sid}_ir.png'></td>"
                         f"<td><img src='thumbs/{sid}_vi.png'></td><td>{html.escape(ir_text)}</td>"
                         f"<td>{html.escape(vi_text)}</td></tr>")
    rows_html.append("</table>")
    atomic_write_text(ctx.output("captions.md"), "\n".join(rows_md) + "\n")
    atomic_write_text(ctx.output("captions.html"), "\n".join(rows_html) + "\n")
    return shown


def _log_wandb(ctx: StageContext, shown: list[dict]) -> None:
    run = ctx.wandb_run()
    if run is None or not shown:
        return
    import wandb

    table = wandb.Table(columns=["id", "ir", "vi", "caption"])
    for rec in shown:
        thumbs = ctx.output("thumbs")
        table.add_data(rec["id"], wandb.Image(str(thumbs / f"{rec['id']}_ir.png")),
                       wandb.Image(str(thumbs / f"{rec['id']}_vi.png")), rec["caption"])
    run.log({"captions/samples": table})


# ---------------------------------------------------------------------------- run


def run(cfg: Config, ctx: StageContext) -> dict:
    from fusionlab.artifacts import atomic_write_text
    from fusionlab.cache.encoders import text_encode_fn, text_sources
    from fusionlab.models.text import ClipEncoder

    L.seed_everything(cfg.seed, verbose=False)
    _refuse_dataset_captions(cfg)
    if cfg.model.captioner.detector:
        from fusionlab.models.detector import prepare_ultralytics

        prepare_ultralytics(ctx.run_dir or ctx.out_dir)  # before any ultralytics import
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    trainer = ctx.make_trainer(cfg.trainer, name="captions")
    items, records = [], []
    for ds in _datasets(cfg):
        indices = list(range(len(ds)))
        records += caption_all(cfg, ctx, trainer, ds, indices)
        items += [(ds, i) for i in indices]
    encoder = ClipEncoder.from_config(cfg.model.clip)
    captions = {r["id"]: r["caption"] for r in records}
    text = encode_cache(trainer, ctx.output("embeddings"), text_sources(captions), encoder, text_encode_fn(encoder),
                        kind="text", batch_size=cfg.model.clip.batch_size,
                        extra={"clip": "../clip", "captions": "../captions.jsonl"})
    if ctx.is_global_zero:
        save_clip(ctx.output("clip"), encoder)
        write_prompts(ctx.output("prompts.safetensors"), encoder, cfg.model.prompts)
        lines = [json.dumps({"id": r["id"], "caption_ir": r["caption_ir"], "caption_vi": r["caption_vi"],
                             "caption": r["caption"]}) for r in records]
        atomic_write_text(ctx.output("captions.jsonl"), "\n".join(lines) + "\n")
        shown = write_preview(ctx, items, records, cfg.model.preview)
        _log_wandb(ctx, shown)
    lengths = [int(m.sum()) for m in encoder.tokenizer(list(captions.values())).ne(0)]
    mentions = sum(any(w in r["caption"].split() or f"{w}-" in r["caption"] for w in DEPTH_WORDS) for r in records)
    return {
        "captions": len(records),
        "encoded": text["computed"],
        "cache_hits": text["hits"],
        "repaired_shards": len(text["repaired_shards"]),
        "depth_mention_rate": mentions / max(len(records), 1),
        "mean_caption_tokens": sum(lengths) / max(len(lengths), 1),
        "truncated_captions": sum(n >= encoder.context_length for n in lengths),
    }
