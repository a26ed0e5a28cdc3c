"""What `fusionlab stage` does in its own process: run one stage and write its manifest.

The attempt runs in the stage's staging folder and is swapped in for `--out` only after its
manifest is written (`pipeline/staging.py`), so a failure leaves the last good result in place.
Under DDP every rank runs this; only global rank 0 writes artifacts, the manifest and the swap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fusionlab import provenance
from fusionlab.artifacts import json_digest
from fusionlab.config import find_references, key_config
from fusionlab.errors import ConfigError, PipelineError
from fusionlab.pipeline import staging
from fusionlab.pipeline.code import dynamic_dependencies, stage_code
from fusionlab.pipeline.manifest import (
    describe_environment,
    hash_outputs,
    outputs_digest,
    stage_key,
    write_manifest,
)
from fusionlab.pipeline.spec import load_stage_config
from fusionlab.stages.base import StageContext, WandbSettings, apply_cpu_threads, process_is_rank_zero


def run_stage(config_path: str | Path, out_dir: str | Path, overrides: dict[str, Any] | None = None,
              context_path: str | Path | None = None, name: str | None = None) -> dict:
    """Run the stage described by `config_path` into `out_dir`; return its manifest (rank 0) or {}."""
    out_dir = Path(out_dir).resolve()
    context = json.loads(Path(context_path).read_text()) if context_path else {}
    module, resolved = load_stage_config(config_path, overrides)
    unresolved = find_references(resolved)
    if unresolved:
        dep, output = unresolved[0]
        raise ConfigError(
            f"{config_path}: '${{{dep}.outputs.{output}}}' is an upstream reference; run this stage through "
            f"`fusionlab run PIPELINE --only {name or resolved['stage']}`, or override the key with a path"
        )
    upstream = context.get("upstream", {})
    config_hash = context.get("config_hash") or json_digest(key_config(module.Config, resolved))
    code = context.get("code") or stage_code(module.__name__, dynamic_dependencies(module, resolved))
    key = context.get("key") or stage_key(resolved["stage"], config_hash, upstream, code["hash"])
    name = name or context.get("name") or out_dir.name
    # missing pretrained weights stop the stage before its folder is touched
    provenance.check_parts([(name, module, module.Config.model_validate(resolved))])

    rank_zero = process_is_rank_zero()
    if rank_zero:
        staging.settle(out_dir)
        attempt = staging.prepare(out_dir, key, tuple(getattr(module, "REUSE", ())))
    else:
        attempt = staging.staging_dir(out_dir)
    ctx = StageContext(
        name=name,
        out_dir=attempt,
        final_dir=out_dir,
        key=key,
        run_dir=Path(context["run_dir"]) if context.get("run_dir") else None,
        outputs=tuple(module.OUTPUTS),
        wandb=WandbSettings(**context.get("wandb", {})) if context.get("wandb") else WandbSettings(),
        group=context.get("group"),
        upstream=upstream,
    )

    import lightning as L

    L.seed_everything(resolved.get("seed", 0), workers=True, verbose=False)
    cfg = module.Config.model_validate(resolved)
    apply_cpu_threads(cfg)
    if rank_zero:
        provenance.warn_random(module, cfg, name)  # one warning per part on random weights
    started = time.time()
    metrics = module.run(cfg, ctx) or {}
    wall = time.time() - started
    if not (ctx.is_global_zero and rank_zero):
        return {}

    missing = [o for o in module.OUTPUTS if not (attempt / o).exists()]
    if missing:
        raise PipelineError(f"stage '{name}' finished without writing its declared outputs {missing} in {attempt}")
    manifest = build_manifest(ctx, module, resolved, cfg, config_hash=config_hash, code=code, metrics=metrics,
                              started=started, wall=wall)
    write_manifest(attempt, manifest)
    staging.commit(out_dir)
    ctx.out_dir = out_dir  # the attempt's folder is the stage's folder now
    _log_lineage(ctx, manifest)  # after the swap, so W&B references the outputs where they now are
    return manifest


def build_manifest(ctx: StageContext, module, resolved: dict, cfg, *, config_hash: str, code: dict, metrics: dict,
                   started: float, wall: float) -> dict:
    """The manifest of a finished attempt: one section per concern, so adding a record is one line."""
    files = hash_outputs(ctx.out_dir, tuple(module.OUTPUTS))
    devices = ctx.devices or {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "world_size": 1}
    return {
        "schema": 2,
        "stage": ctx.name,
        "type": resolved["stage"],
        "key": ctx.key,
        "config_hash": config_hash,
        "config": resolved,
        "code": code,
        "upstream": {n: {"key": u.get("key"), "outputs_digest": u.get("outputs_digest")} for n, u in ctx.upstream.items()},
        **describe_environment(),
        "outputs": files,
        "outputs_digest": outputs_digest(files),
        "headline": list(getattr(module, "HEADLINE", ())),
        "metrics": metrics,
        "wall_time_s": round(wall, 3),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "devices": devices,
        "precision": devices.get("precision", resolved.get("trainer", {}).get("precision")),
        "pretrained": provenance.manifest_records(module, cfg),  # source + sha256 of every pretrained part
    }


def _log_lineage(ctx: StageContext, manifest: dict) -> None:
    """W&B lineage: this stage's outputs as artifacts, its upstream outputs as used artifacts.

    W&B cannot mark artifacts as used while offline; there the upstream keys and digests are
    recorded in the run config and in the output artifacts' metadata instead.
    """
    run = ctx.wandb_run()
    if run is None:
        return
    import wandb

    upstream = {dep: {"key": info.get("key"), "outputs_digest": info.get("outputs_digest")}
                for dep, info in ctx.upstream.items()}
    run.config.update({"stage": ctx.name, "stage_key": manifest["key"], "upstream": upstream}, allow_val_change=True)
    if not run.offline:
        for dep, info in ctx.upstream.items():
            for output in info.get("outputs_declared", []):
                run.use_artifact(f"{dep}-{output}:latest".replace("/", "-"))
    for output in ctx.outputs:
        art = wandb.Artifact(f"{ctx.name}-{output}".replace("/", "-"), type=ctx.name,
                             metadata={"key": manifest["key"], "upstream": upstream})
        art.add_reference(f"file://{ctx.final_dir or ctx.out_dir}/{output}", checksum=False)
        run.log_artifact(art)
    scalars = {k: v for k, v in manifest["metrics"].items() if isinstance(v, (int, float))}
    run.summary.update({**scalars, "wall_time_s": manifest["wall_time_s"]})
    run.finish()
