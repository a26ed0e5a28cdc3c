"""Stage `scenes`: generate the synthetic night/day road scenes that the default pipeline trains on.

It writes the same on-disk layout the real readers read (ir/, vi/, depth/, labels/, masks/, scenes/),
so every later stage runs the same code on synthetic and real data.
"""

from __future__ import annotations

from fusionlab.stages.base import StageConfig, StageContext

OUTPUTS = ("dataset",)
HEADLINE = ("n_samples",)


class Config(StageConfig):
    n: int = 200
    width: int = 160
    height: int = 128


def run(cfg: Config, ctx: StageContext) -> dict:
    from fusionlab.artifacts import atomic_dir
    from fusionlab.data.synth import generate

    if ctx.is_global_zero:
        with atomic_dir(ctx.output("dataset")) as tmp:
            generate(tmp, n=cfg.n, seed=cfg.seed, size=(cfg.width, cfg.height))
    return {"n_samples": cfg.n, "width": cfg.width, "height": cfg.height}
