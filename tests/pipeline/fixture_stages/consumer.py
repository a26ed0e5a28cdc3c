"""A stage that reads the upstream `model/` artifact and records one of its weights."""

from __future__ import annotations

from fusionlab.artifacts import atomic_write_json, load_model_files
from fusionlab.stages.base import StageConfig, StageContext

OUTPUTS = ("summary.json",)


class Config(StageConfig):
    model_dir: str
    scale: float = 1.0


def run(cfg: Config, ctx: StageContext) -> dict:
    config, state = load_model_files(cfg.model_dir, what="consumer input")
    value = float(state["weight"].sum()) * cfg.scale
    atomic_write_json(ctx.output("summary.json"), {"value": value, "width": config["width"]})
    return {"value": value}
