"""tests/pipeline's `consumer` plus a seeded noise term: cheap, and different for every seed."""

from __future__ import annotations

import random

from fixture_stages import consumer

from fusionlab.stages.base import StageContext

OUTPUTS = consumer.OUTPUTS
HEADLINE = ("score",)
Config = consumer.Config


def run(cfg: Config, ctx: StageContext) -> dict:
    value = consumer.run(cfg, ctx)["value"]  # the upstream model's weight sum x scale
    noise = random.Random(cfg.seed).gauss(0.0, 0.1)
    return {"score": value + noise, "noise": noise}
