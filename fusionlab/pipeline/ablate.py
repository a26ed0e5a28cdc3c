"""`fusionlab ablate`: a pipeline once per grid point and seed, reusing every stage that does not change.

- **Jobs.** Each (point, seed) is one ordinary pipeline run in its own run dir `<out>/p<i>-s<k>`
  (resumable, with its own manifests and summary); the runner's `plan` / `run_pipeline` run it.
- **Reuse.** Before a job is planned, each of its stages whose key (`stage_key`: config + upstream
  output digests + code) equals that of a finished stage elsewhere (another job of this ablation,
  the pipeline's own run dir, the run dir the ablation folder sits in, its other ablations, or a
  `--reuse` dir) is linked in: declared outputs hard-linked (copied across file
  systems) after checking their sha256, manifest and logs copied, the source noted in
  `.fusionlab/reused.json`. The runner then finds the stage up to date and skips it. The runner
  itself is used through its public functions only.
- **Seeds.** Seed k adds k to the `seed` of the stages the grid changes and of every stage
  downstream of them (`--seed-stages` picks others). Upstream stages keep their seed, so they are
  identical for all seeds and run once. `data.seed` (the train/eval split) never changes: every
  job scores the same eval images, and differences pair up by seed.
- **Results.** The manifests' metrics of the stages that change are gathered per job;
  `fusionlab.pipeline.ablate_table` turns them into mean ± 95 % intervals and paired differences.
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fusionlab.errors import ConfigError, PipelineError

# manifest metrics shown by default, besides each stage's HEADLINE (case-insensitive patterns)
DEFAULT_METRICS = ("eval/*", "retention/*", "map50/*", "map50_95/*", "recall_split/*", "depth/*/absrel", "*absrel*")
COUNT_SUFFIXES = ("/n", "/excluded", "/images")  # bookkeeping, not results


@dataclass
class Axis:
    key: str
    values: list[str]


@dataclass
class Point:
    index: int
    settings: dict[str, str]  # grid key -> value as typed (only the keys that vary)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()) or "as configured"


@dataclass
class Job:
    point: Point
    seed: int  # added to each seed stage's configured seed
    run_dir: Path
    overrides: list[str]
    pipeline: object = None  # PipelineConfig
    specs: list = field(default_factory=list)  # [StageSpec]

    @property
    def name(self) -> str:
        return f"p{self.point.index}-s{self.seed}"


@dataclass
class Ablation:
    pipeline_file: str
    name: str
    out_dir: Path
    axes: list[Axis]
    fixed: list[str]  # overrides every job gets (command line + one-valued grid keys)
    points: list[Point]
    seeds: int
    selected: list[str]  # stages that run (the --stages and their upstream)
    varied: list[str]  # stages whose config differs between points
    seed_stages: list[str]
    base_run_dir: Path
    metrics: tuple[str, ...] | None  # patterns; None = DEFAULT_METRICS + headlines
    reuse_roots: list[Path] = field(default_factory=list)  # run dirs / ablation folders searched for stages
    jobs: list[Job] = field(default_factory=list)

    @property
    def home_run(self) -> Path | None:
        """The run dir holding this ablation (`<run>/ablations/<name>`): its report links the tables."""
        return self.out_dir.parent.parent if self.out_dir.parent.name == "ablations" else None

    @property
    def measured(self) -> list[str]:
        """Stages whose numbers can differ between jobs: the others are the same run everywhere."""
        changing = set(self.varied) | set(self.seed_stages)
        return [n for n in self.selected if n in changing]


# --------------------------------------------------------------------------- grid


def split_values(text: str) -> list[str]:
    """`a,b,[1,2]` -> ['a', 'b', '[1,2]']: commas inside brackets or quotes do not split."""
    out, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(current)
            current = ""
            continue
        current += ch
    out.append(current)
    return [v.strip() for v in out]


def parse_grid(items: list[str]) -> list[Axis]:
    axes: list[Axis] = []
    for item in items:
        key, sep, rest = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--grid '{item}' is not of the form KEY=V1,V2 (e.g. fusion.text_guidance=on,off)")
        values = split_values(rest)
        if any(v == "" for v in values):
            raise ConfigError(f"--grid '{item}': empty value; list the values separated by commas, e.g. {key}=a,b")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid '{item}' lists a value twice")
        if any(a.key == key for a in axes):
            raise ConfigError(f"--grid key '{key}' is given twice; list all its values in one KEY=V1,V2")
        axes.append(Axis(key, values))
    return axes


def grid_points(axes: list[Axis]) -> list[Point]:
    """Every combination of the varying keys, the first values first (point 0 is the reference)."""
    varying = [a for a in axes if len(a.values) > 1]
    combos = itertools.product(*[a.values for a in varying]) if varying else [()]
    return [Point(i, dict(zip([a.key for a in varying], combo, strict=True))) for i, combo in enumerate(combos)]


# --------------------------------------------------------------------------- checks


def _has_key(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return True  # an unset optional section: validation decides
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _dotted_keys(cfg: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += _dotted_keys(v, f"{prefix}{k}.")
    return keys


def _closest(key: str, specs) -> str:
    known = [f"{s.name}.{k}" for s in specs for k in _dotted_keys(s.symbolic)]
    hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean '{hint[0]}'?" if hint else "; keys are STAGE.path.to.key (see `fusionlab run PIPELINE --dry-run`)"


def check_grid_key(key: str, specs) -> str:
    """The stage a grid key changes (or '*' for every stage); a clear ConfigError otherwise."""
    from fusionlab.pipeline.spec import PipelineConfig

    names = [s.name for s in specs]
    head, _, rest = key.partition(".")
    if head in names and rest:
        spec = specs[names.index(head)]
        if not _has_key(spec.symbolic, rest):
            raise ConfigError(f"--grid key '{key}': stage '{head}' ({spec.source}) has no setting '{rest}'"
                              + _closest(key, specs))
        return head
    if head in PipelineConfig.model_fields:
        raise ConfigError(f"--grid key '{key}' is a pipeline setting; an ablation varies stage settings "
                          "(STAGE.key=V1,V2); pass pipeline settings as plain KEY=VALUE overrides")
    having = [s.name for s in specs if _has_key(s.symbolic, key)]
    if not having:
        raise ConfigError(f"--grid key '{key}' is no stage's setting" + _closest(key, specs))
    if len(having) < len(specs):
        raise ConfigError(f"--grid key '{key}' has no stage name in front, so it would go to every stage, but "
                          f"only {', '.join(having)} ha{'s' if len(having) == 1 else 've'} it: write "
                          f"'{having[0]}.{key}'")
    return "*"


def _stage_names(text_items: list[str] | None, names: list[str], what: str) -> list[str]:
    out = [n for item in (text_items or []) for n in item.split(",") if n]
    for n in out:
        if n not in names:
            hint = difflib.get_close_matches(n, names, n=1)
            raise ConfigError(f"{what}: no stage named '{n}' in this pipeline (stages: {', '.join(names)})"
                              + (f"; did you mean '{hint[0]}'?" if hint else ""))
    return out


def with_upstream(specs, names) -> list[str]:
    keep = set(names)
    for spec in reversed(specs):
        if spec.name in keep:
            keep.update(spec.deps)
    return [s.name for s in specs if s.name in keep]


def with_downstream(specs, names) -> list[str]:
    keep = set(names)
    for spec in specs:
        if any(d in keep for d in spec.deps):
            keep.add(spec.name)
    return [s.name for s in specs if s.name in keep]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "ablation"


# --------------------------------------------------------------------------- planning


def build_ablation(pipeline_file: str | Path, grid: list[str], *, seeds: int = 3, stages: list[str] | None = None,
                   seed_stages: list[str] | None = None, overrides: list[str] = (), out: str | Path | None = None,
                   name: str | None = None, metrics: list[str] | None = None, reuse: list[str] = ()) -> Ablation:
    """Check everything and resolve every job's pipeline; nothing is written. Errors are ConfigErrors."""
    from fusionlab.pipeline.spec import load_pipeline

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    axes = parse_grid(grid)
    one_valued = [a for a in axes if len(a.values) == 1]  # fixed overrides; one may switch on settings
    for axis in one_valued:  # that another then sets (preset=text2pixels, model.codebook=false)
        others = [f"{a.key}={a.values[0]}" for a in one_valued if a is not axis]
        try:
            specs_without = load_pipeline(pipeline_file, [*overrides, *others])[1]
        except ConfigError:
            specs_without = load_pipeline(pipeline_file, list(overrides))[1]
        check_grid_key(axis.key, specs_without)
    fixed = [*overrides, *(f"{a.key}={a.values[0]}" for a in one_valued)]
    try:
        base_specs = load_pipeline(pipeline_file, fixed)[1]
    except ConfigError as exc:
        raise ConfigError(f"--grid {' '.join(fixed[len(overrides):])}: {exc}") from None
    names = [s.name for s in base_specs]
    for axis in axes:
        if len(axis.values) > 1:
            check_grid_key(axis.key, base_specs)
    points = grid_points(axes)

    # every value on its own first, so an error names the value that causes it
    point_specs: list[list] = []
    for axis in axes:
        for value in axis.values if len(axis.values) > 1 else []:
            try:
                load_pipeline(pipeline_file, [*fixed, f"{axis.key}={value}"])
            except ConfigError as exc:
                raise ConfigError(f"--grid {axis.key}={value}: {exc}") from None
    for p in points:
        try:
            point_specs.append(load_pipeline(pipeline_file, [*fixed, *_point_overrides(p)])[1])
        except ConfigError as exc:
            raise ConfigError(f"--grid point ({p.label}): {exc}") from None

    chosen = _stage_names(stages, names, "--stages")
    selected = with_upstream(base_specs, chosen) if chosen else names
    varied = [n for i, n in enumerate(names)
              if len({specs[i].config_hash for specs in point_specs}) > 1]
    outside = [n for n in varied if n not in selected]
    if outside:
        raise ConfigError(f"the grid changes stage(s) {', '.join(outside)}, which --stages does not run; "
                          f"add them to --stages")
    asked = _stage_names(seed_stages, names, "--seed-stages")
    seed_roots = asked or varied or chosen
    if not seed_roots:
        raise ConfigError("nothing varies: give --grid KEY=V1,V2, or --seed-stages (or --stages) to repeat stages "
                          "over seeds")
    seeded = [n for n in with_downstream(base_specs, seed_roots) if n in selected]
    if not seeded:
        raise ConfigError(f"--seed-stages {', '.join(asked)}: not among the stages that run ({', '.join(selected)})")
    clash = [a.key for a in axes if a.key.split(".")[-1] == "seed"]
    if clash:
        raise ConfigError(f"--grid key '{clash[0]}': seeds come from --seeds N (seed +0..N-1 for "
                          f"{', '.join(seeded)}); vary other settings with --grid")

    base_run_dir = base_specs[0].out_dir.parent
    if name is None:
        name = "+".join(a.key.split(".")[-1] for a in axes if len(a.values) > 1) or "seeds"
    out_dir = Path(out).expanduser().resolve() if out else base_run_dir / "ablations" / _slug(name)
    roots: list[Path] = []
    for root in [base_run_dir, out_dir.parent.parent if out_dir.parent.name == "ablations" else None,
                 *(Path(r).expanduser().resolve() for r in reuse)]:
        if root is not None and root not in roots:
            roots.append(root)
    ablation = Ablation(str(pipeline_file), name, out_dir, axes, fixed, points, seeds, selected, varied, seeded,
                        base_run_dir, tuple(metrics) if metrics else None, roots)
    for k in range(seeds):  # seed-major: after the first round every point has one result
        for p, specs in zip(points, point_specs, strict=True):
            seed_over = [f"{s.name}.seed={int(s.symbolic.get('seed', 0)) + k}" for s in specs if s.name in seeded]
            run_dir = out_dir / f"p{p.index}-s{k}"
            job_over = [*fixed, *_point_overrides(p), *seed_over, f"run_dir={run_dir}"]
            pipeline, job_specs = load_pipeline(pipeline_file, job_over)
            ablation.jobs.append(Job(p, k, run_dir, job_over, pipeline, job_specs))
    return ablation


def _point_overrides(p: Point) -> list[str]:
    return [f"{k}={v}" for k, v in p.settings.items()]


# --------------------------------------------------------------------------- reuse


STAGE_PATTERNS = ("*/manifest.json", "*/*/manifest.json", "ablations/*/*/*/manifest.json")  # run dir, ablation
# folder (its jobs), a run dir's ablations


def finished_index(roots) -> dict[str, list[Path]]:
    """key -> finished stage folders under these run dirs or ablation folders: where a stage really ran
    first (links point there), newest first."""
    from fusionlab.pipeline.manifest import read_manifest

    found: dict[str, list[tuple[str, Path]]] = {}
    paths = {p for root in roots for pattern in STAGE_PATTERNS for p in Path(root).glob(pattern)}
    for path in sorted(paths):
        man = read_manifest(path.parent)
        if man and man.get("key") and man.get("type"):
            ran_here = not (path.parent / ".fusionlab" / "reused.json").is_file()
            found.setdefault(man["key"], []).append((ran_here, man.get("finished_at", ""), path.parent))
    return {k: [d for *_, d in sorted(v, key=lambda t: (t[0], t[1]), reverse=True)] for k, v in found.items()}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def link_stage(src: Path, dst: Path, manifest: dict, outputs: tuple[str, ...]) -> None:
    """Make `dst` a finished copy of stage folder `src`: outputs hard-linked, manifest (last) and logs
    copied. Built under a temporary name and renamed into place, so `dst` is never half-made."""
    from fusionlab.artifacts import atomic_dir, atomic_write_json

    with atomic_dir(dst) as tmp:
        for name in outputs:  # declared folders exist even when empty
            if (src / name).is_dir():
                (tmp / name).mkdir(parents=True, exist_ok=True)
        for rel in manifest.get("outputs", {}):
            _link_or_copy(src / rel, tmp / rel)
        if (src / "logs").is_dir():
            shutil.copytree(src / "logs", tmp / "logs")
        atomic_write_json(tmp / ".fusionlab" / "reused.json", {"from": str(src), "key": manifest.get("key")})
        shutil.copy2(src / "manifest.json", tmp / "manifest.json")


def reuse_finished(job: Job, selected: list[str], search: list[Path]) -> dict[str, Path]:
    """Link into the job's run dir every selected stage that is finished elsewhere under the same key.

    Walks the stages in order with the manifests the job's run dir will hold, so a stage is matched
    only when its upstream is also in place. Returns {stage: source folder} of what was linked."""
    from fusionlab.pipeline.manifest import read_manifest, verify_outputs

    index = finished_index(search)
    index = {k: [d for d in v if d.parent.resolve() != job.run_dir.resolve()] for k, v in index.items()}
    here: dict[str, dict] = {}
    linked: dict[str, Path] = {}
    for spec in job.specs:
        if spec.name not in selected or any(d not in here for d in spec.deps):
            continue
        key = spec.key({d: here[d] for d in spec.deps})
        own = read_manifest(spec.out_dir)
        if own is not None and own.get("key") == key:
            here[spec.name] = own  # the runner verifies its outputs when it plans
            continue
        for src in index.get(key, []):
            man = read_manifest(src)
            if man and man.get("key") == key and verify_outputs(src, man) is None:
                link_stage(src, spec.out_dir, man, spec.outputs)
                here[spec.name], linked[spec.name] = man, src
                break
    return linked


def predict(ablation: Ablation) -> list[list[tuple[str, str]]]:
    """For a dry run: per job, (stage, what will happen) without touching the disk.

    A stage is identified by its key when its upstream is finished, else by its config and its
    upstream's identities: two jobs whose stages share an identity run it once."""
    from fusionlab.artifacts import json_digest
    from fusionlab.pipeline.manifest import read_manifest, verify_outputs

    index = finished_index([*ablation.reuse_roots, ablation.out_dir])
    produced: dict[str, str] = {}  # identity -> job that will run it
    out = []
    for job in ablation.jobs:
        ident: dict[str, str] = {}
        real: dict[str, dict] = {}
        rows = []
        for spec in job.specs:
            if spec.name not in ablation.selected:
                continue
            action = ""
            if all(d in real for d in spec.deps):
                key = spec.key({d: real[d] for d in spec.deps})
                own = read_manifest(spec.out_dir)
                if own is not None and own.get("key") == key and verify_outputs(spec.out_dir, own) is None:
                    real[spec.name], action = own, "skip (up to date)"
                else:
                    src = next((d for d in index.get(key, []) if verify_outputs(d, read_manifest(d) or {}) is None),
                               None)
                    if src is not None:
                        real[spec.name], action = read_manifest(src), f"reuse {src}"
                ident[spec.name] = key if action else ""
            if not action:
                ident[spec.name] = json_digest({"type": spec.type, "config": spec.config_hash, "code": spec.code["hash"],
                                                "upstream": {d: ident[d] for d in spec.deps}})
                if ident[spec.name] in produced:
                    action = f"reuse from {produced[ident[spec.name]]} (once it has run)"
                else:
                    produced[ident[spec.name]], action = job.name, "run"
            rows.append((spec.name, action))
        out.append(rows)
    return out


# --------------------------------------------------------------------------- running


@dataclass
class JobResult:
    job: Job
    status: str  # "ok" | "failed"
    error: str = ""
    linked: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)  # "stage/metric" -> float


def run_ablation(ablation: Ablation, echo=print) -> list[JobResult]:
    """Run every job in order; a failed job is reported and the others still run."""
    import time

    from fusionlab.pipeline.lock import RunLock
    from fusionlab.pipeline.runner import format_plan, plan, run_pipeline, write_summary

    results: list[JobResult] = []
    search = [*ablation.reuse_roots, ablation.out_dir]
    started = time.time()
    with RunLock(ablation.out_dir):
        for n, job in enumerate(ablation.jobs, 1):
            elapsed = time.time() - started
            echo(f"\n##### ablation {ablation.name} [{n}/{len(ablation.jobs)}] {job.name}: {job.point.label}; "
                 f"seed +{job.seed} -> {job.run_dir} ({elapsed / 60:.1f} min so far)")
            linked = reuse_finished(job, ablation.selected, search)
            for stage, src in linked.items():
                echo(f"  reuse {stage}: linked from {src}")
            steps = plan(job.specs, only=ablation.selected)
            echo(format_plan(steps))
            try:
                rows = run_pipeline(job.pipeline, job.specs, steps, pipeline_file=ablation.pipeline_file, echo=echo)
            except PipelineError as exc:
                echo(f"job {job.name} FAILED: {exc}")
                results.append(JobResult(job, "failed", str(exc), linked))
                continue
            write_summary(job.run_dir, rows)
            results.append(JobResult(job, "ok", "", linked, collect_values(ablation, job)))
    return results


def _wanted(key: str, headline: list[str], patterns: tuple[str, ...] | None) -> bool:
    low = key.lower()
    if patterns is not None:
        return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)
    if low.startswith("train/") or low.endswith(COUNT_SUFFIXES):
        return False
    return key in headline or any(fnmatch.fnmatchcase(low, p) for p in DEFAULT_METRICS)


def collect_values(ablation: Ablation, job: Job) -> dict[str, float]:
    """`stage/metric` -> value from the manifests of the stages that change between jobs."""
    from fusionlab.pipeline.manifest import read_manifest

    values: dict[str, float] = {}
    for spec in job.specs:
        if spec.name not in ablation.measured:
            continue
        man = read_manifest(spec.out_dir) or {}
        headline = list(man.get("headline") or [])
        for key, value in (man.get("metrics") or {}).items():
            if isinstance(value, bool) or not _wanted(key, headline, ablation.metrics):
                continue
            if isinstance(value, (int, float)):
                values[f"{spec.name}/{key}"] = float(value)
            elif value is None:  # non-finite values are stored as null
                values[f"{spec.name}/{key}"] = float("nan")
    return values
