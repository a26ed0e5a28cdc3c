"""Plan and run a pipeline: skip what is up to date, run the rest each in its own process.

A stage is skipped when its manifest exists, its key (config without operational keys +
upstream output digests + the code it runs) is unchanged and its outputs verify. Anything that
reruns makes every stage downstream rerun. Each attempt works in a staging folder and replaces
the stage's folder only when it succeeds (`pipeline/staging.py`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fusionlab.artifacts import atomic_write_json, atomic_write_text
from fusionlab.errors import ConfigError, PipelineError
from fusionlab.pipeline import staging
from fusionlab.pipeline.lock import RunLock
from fusionlab.pipeline.manifest import read_manifest, verify_outputs
from fusionlab.pipeline.spec import PipelineConfig, StageSpec
from fusionlab.tables import markdown_table

STATE_DIR = staging.STATE_DIR


@dataclass
class Step:
    spec: StageSpec
    action: str   # "run" | "skip" | "leave" (not selected, left as it is)
    reason: str


def _select(specs: list[StageSpec], only: list[str] | None, start: str | None) -> set[str]:
    names = [s.name for s in specs]
    for name in (only or []) + ([start] if start else []):
        if name not in names:
            import difflib

            hint = difflib.get_close_matches(name, names, n=1)
            raise ConfigError(f"no stage named '{name}' in this pipeline (stages: {', '.join(names)})"
                              + (f"; did you mean '{hint[0]}'?" if hint else ""))
    if only:
        return set(only)
    if start:
        return set(names[names.index(start):])
    return set(names)


def plan(specs: list[StageSpec], *, only: list[str] | None = None, start: str | None = None,
         force: bool = False) -> list[Step]:
    """Decide, stage by stage, whether it runs and why."""
    selected = _select(specs, only, start)
    steps: list[Step] = []
    rerun: set[str] = set()
    manifests = {s.name: read_manifest(s.out_dir) for s in specs}
    for spec in specs:
        if spec.name not in selected:
            steps.append(Step(spec, "leave", "not selected"))
            continue
        man = manifests[spec.name]
        dirty = [d for d in spec.deps if d in rerun]
        key = None
        if force:
            action, reason = "run", "--force"
        elif dirty:
            action, reason = "run", f"upstream {', '.join(dirty)} reruns"
        elif man is None:
            action, reason = "run", "never finished here (no manifest)"
        else:
            missing = [d for d in spec.deps if manifests.get(d) is None]
            if missing:
                action, reason = "run", f"upstream {', '.join(missing)} has no manifest"
            else:
                upstream = {d: manifests[d] for d in spec.deps}
                key = spec.key(upstream)
                if man.get("key") != key:
                    action, reason = "run", why_key_changed(spec, man, upstream)
                else:
                    problem = verify_outputs(spec.out_dir, man)
                    action, reason = ("run", problem) if problem else ("skip", "up to date")
        if action == "run":
            rerun.add(spec.name)
            if key is None and not [d for d in spec.deps if d in rerun or manifests.get(d) is None]:
                key = spec.key({d: manifests[d] for d in spec.deps})
            if key is not None and staging.attempt_key(spec.out_dir) == key:
                reason += "; resumes its unfinished attempt"
        steps.append(Step(spec, action, reason))
    return steps


def why_key_changed(spec: StageSpec, man: dict, upstream: dict[str, dict]) -> str:
    """What differs from the manifest's run: config keys, code modules, upstream outputs."""
    from fusionlab.config import key_config

    reasons = []
    if man.get("config_hash") != spec.config_hash:
        old = key_config(spec.module.Config, man.get("config", {}))
        changed = sorted(_diff_keys(old, key_config(spec.module.Config, spec.resolved)))
        reasons.append("config changed" + (f" ({_some(changed)})" if changed else ""))
    old_code, new_code = man.get("code") or {}, spec.code
    if old_code.get("hash") != new_code["hash"]:
        before, after = old_code.get("modules") or {}, new_code["modules"]
        changed = sorted(m for m in set(before) | set(after) if before.get(m) != after.get(m))
        reasons.append("code changed" + (f" ({_some(changed)})" if changed and before and after else ""))
    for dep, info in upstream.items():
        if man.get("upstream", {}).get(dep, {}).get("outputs_digest") != info.get("outputs_digest"):
            reasons.append(f"upstream {dep} produced new outputs")
    return "; ".join(reasons) or "key changed"


def _diff_keys(old, new, prefix="") -> set[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: set[str] = set()
        for k in set(old) | set(new):
            out |= _diff_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return set() if old == new else {prefix.rstrip(".")}


def _some(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def format_plan(steps: list[Step]) -> str:
    width = max(len(s.spec.name) for s in steps)
    return "\n".join(f"  {s.action:<5} {s.spec.name:<{width}}  {s.reason}" for s in steps)


def upstream_missing(steps: list[Step]) -> str | None:
    """A stage that will run whose upstream neither runs now nor has a manifest."""
    running = {s.spec.name for s in steps if s.action == "run"}
    for step in steps:
        if step.action != "run":
            continue
        for dep in step.spec.deps:
            dep_step = next(s for s in steps if s.spec.name == dep)
            if dep not in running and read_manifest(dep_step.spec.out_dir) is None:
                return (f"stage '{step.spec.name}' needs the artifacts of '{dep}', which has not finished in "
                        f"{dep_step.spec.out_dir} (no manifest.json). Run it first: "
                        f"`fusionlab run PIPELINE --only {dep}` (or without --only to run everything).")
    return None


def settle(specs: list[StageSpec], echo=print) -> None:
    """Complete swaps that a kill interrupted (see pipeline/staging.py), unless another run holds
    the run dir: that run may be swapping right now and settles its own stages."""
    pending = [s for s in specs if (staging.staging_dir(s.out_dir) / staging.MANIFEST).is_file()]
    if not pending:
        return
    try:
        lock = RunLock(specs[0].out_dir.parent).acquire()
    except PipelineError:
        return
    try:
        for spec in pending:
            note = staging.settle(spec.out_dir)
            if note:
                echo(f"note: stage {spec.name}: {note}")
    finally:
        lock.release()


def run_pipeline(pipeline: PipelineConfig, specs: list[StageSpec], steps: list[Step], *,
                 pipeline_file: str | None = None, echo=print) -> list[dict]:
    """Execute the plan under the run-dir lock; returns one summary row per stage. `pipeline_file`
    is recorded in each stage's context (the report reads the pipeline's `cpu_sized` list there)."""
    problem = upstream_missing(steps)
    if problem:
        raise PipelineError(problem)
    run_dir = specs[0].out_dir.parent
    rows: list[dict] = []
    with RunLock(run_dir) as lock:
        if lock.stale_removed:
            echo(f"note: removed a stale lock left by dead pid {lock.stale_removed.get('pid')}")
        group = _run_group(run_dir)
        for step in steps:
            spec = step.spec
            if step.action != "run":
                man = read_manifest(spec.out_dir)
                status = "skipped" if step.action == "skip" else ("kept" if man else "not run")
                rows.append(_row(spec, status, man))
                continue
            echo(f"\n=== stage {spec.name} ({spec.type}): {step.reason}")
            started = time.time()
            code, attempt, key = _launch(spec, pipeline, group, pipeline_file)
            man = read_manifest(spec.out_dir)
            if code != 0 or man is None or man.get("key") != key:
                rows.append(_row(spec, "FAILED", None, time.time() - started))
                echo(format_summary(rows))
                kept = (f"The previous results in {spec.out_dir} are unchanged, and the stages after it stay "
                        "up to date with them. " if read_manifest(spec.out_dir) else "")
                raise PipelineError(
                    f"stage '{spec.name}' failed (exit code {code}); see {attempt / 'stage.log'}. {kept}"
                    f"Fix the cause and rerun: finished stages are skipped and this attempt resumes from its "
                    f"last checkpoint in {attempt}."
                )
            rows.append(_row(spec, "ran", man))
    return rows


def _run_group(run_dir: Path) -> str:
    """One W&B group per pipeline run dir, so every stage run of this pipeline shows together."""
    path = run_dir / STATE_DIR / "group.txt"
    if path.is_file():
        return path.read_text().strip()
    group = f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    atomic_write_text(path, group + "\n")
    return group


def _launch(spec: StageSpec, pipeline: PipelineConfig, group: str, pipeline_file: str | None) -> tuple[int, Path, str]:
    """Run `fusionlab stage` for one stage in a child process, in the stage's staging folder,
    teeing its output to stage.log there; returns (exit code, staging folder, stage key)."""
    upstream, manifests = {}, {}
    for dep in spec.deps:
        man = manifests[dep] = read_manifest(spec.out_dir.parent / dep) or {}
        upstream[dep] = {"key": man.get("key"), "outputs_digest": man.get("outputs_digest"),
                         "outputs_declared": sorted({rel.split("/")[0] for rel in man.get("outputs", {})})}
    code = spec.code
    key = spec.key(manifests)
    attempt = staging.prepare(spec.out_dir, key, tuple(getattr(spec.module, "REUSE", ())))
    state = attempt / STATE_DIR
    cfg_file = atomic_write_text(state / "config.yaml", yaml.safe_dump(spec.resolved, sort_keys=False))
    ctx_file = atomic_write_json(state / "context.json", {
        "name": spec.name,
        "run_dir": str(spec.out_dir.parent),
        "config_hash": spec.config_hash,
        "code": code,
        "key": key,
        "upstream": upstream,
        "wandb": pipeline.wandb.model_dump(),
        "group": group,
        "pipeline": pipeline_file,
    })
    prefix = shlex.split(pipeline.launcher) if pipeline.launcher else [sys.executable]
    cmd = [*prefix, "-m", "fusionlab", "stage", str(cfg_file), "--out", str(spec.out_dir),
           "--context", str(ctx_file), "--name", spec.name]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(attempt / "stage.log", "ab") as log:
        return _tee_process(cmd, env, log), attempt, key


def _tee_process(cmd: list[str], env: dict, log) -> int:
    """Run `cmd`, showing its output live and appending it to `log`.

    On a terminal the child gets a pseudo-terminal, so its progress bars behave as if run directly.
    """
    if sys.stdout.isatty():
        import pty

        master, slave = pty.openpty()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        read = lambda: _read_pty(master)  # noqa: E731
    else:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        master = None
        read = lambda: proc.stdout.read1(65536)  # noqa: E731
    try:
        while chunk := read():
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            log.write(chunk)
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if master is not None:
            os.close(master)


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        return b""


def _row(spec: StageSpec, status: str, man: dict | None, wall: float | None = None) -> dict:
    metrics = (man or {}).get("metrics", {})
    headline = list(getattr(spec.module, "HEADLINE", ())) or [k for k, v in metrics.items() if isinstance(v, (int, float))][:3]
    shown = {k: metrics[k] for k in headline if isinstance(metrics.get(k), (int, float))}
    return {"stage": spec.name, "status": status,
            "wall_time_s": (man or {}).get("wall_time_s", wall), "metrics": shown}


def format_summary(rows: list[dict]) -> str:
    def cells(r: dict) -> list[str]:
        wall = f"{r['wall_time_s']:.1f} s" if isinstance(r.get("wall_time_s"), (int, float)) else "-"
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items()) or "-"
        return [r["stage"], r["status"], wall, metrics]

    return "\n" + markdown_table(["stage", "status", "wall time", "headline metrics"], map(cells, rows))


def write_summary(run_dir: Path, rows: list[dict], footer: str = "") -> None:
    atomic_write_json(run_dir / STATE_DIR / "summary.json", rows)
    tail = "\n" + footer.strip("\n") + "\n" if footer else ""  # e.g. the random-weights notice
    atomic_write_text(run_dir / "summary.md", format_summary(rows).lstrip() + "\n" + tail)
