"""Scores the upstream `model/` with a seeded noise term: cheap, and different for every seed."""

from __future__ import annotations

import random

from fusionlab.artifacts import atomic_write_json, load_model_files
from fusionlab.stages.base import StageConfig, StageContext

OUTPUTS = ("score.json",)
HEADLINE = ("score",)


class Config(StageConfig):
    model_dir: str
    scale: float = 1.0


def run(cfg: Config, ctx: StageContext) -> dict:
    _, state = load_model_files(cfg.model_dir, what="scored input")
    noise = random.Random(cfg.seed).gauss(0.0, 0.1)
    score = float(state["weight"].sum()) * cfg.scale + noise
    atomic_write_json(ctx.output("score.json"), {"score": score})
    return {"score": score, "noise": noise}
