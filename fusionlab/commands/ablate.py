"""Run a pipeline once per grid point and seed; tabulate every headline metric as mean ± 95 % interval
and as the paired difference of each point against the first.

Each (point, seed) gets its own run dir under the ablation folder (default
<run_dir>/ablations/<name>/p<i>-s<k>). Stages whose key is unchanged (the upstream ones the grid
does not touch) are linked in from wherever they already finished (this ablation, the pipeline's run
dir, the run dir holding the ablation folder and its other ablations, --reuse dirs), so they run once. Seed +k is
added to the `seed` of the stages the grid changes and everything downstream (or --seed-stages);
the train/eval split stays fixed. Outputs: ablation.{md,html,csv,json,png}, linked from the run's
report. Rerunning the same command resumes: finished jobs are skipped.

Examples:
  fusionlab ablate stages/pipeline.yaml --grid fusion.text_guidance=on,off fusion.depth_loss=on,off --stages fusion
  fusionlab ablate stages/pipeline.yaml --grid detect.mode=bilevel,joint,alternating --seeds 3 --dry-run
A one-valued key (fusion.preset=text2pixels) is a fixed override for every job, like KEY=VALUE.
"""

from fusionlab.commands import _args

HELP = "run a pipeline over a grid of settings x seeds: tables of mean ± 95 %% interval and paired differences, a plot"


def add_arguments(parser) -> None:
    parser.add_argument("pipeline", help="pipeline YAML, e.g. stages/pipeline.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every job (as for `run`)")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="settings to vary, e.g. fusion.text_guidance=on,off (every combination is a point; "
                             "the first values form the reference point p0)")
    parser.add_argument("--seeds", type=_args.positive, default=3, help="seeds per point (default 3)")
    parser.add_argument("--stages", action="append", metavar="STAGE",
                        help="run only these stages and their upstream (repeatable or comma-separated; default all)")
    parser.add_argument("--seed-stages", action="append", metavar="STAGE",
                        help="stages (and their downstream) that get seed +k (default: those the grid changes)")
    parser.add_argument("--metrics", nargs="+", metavar="PATTERN",
                        help="manifest metrics to tabulate, as patterns (default: fusion, retention, mAP, depth AbsRel "
                             "and each stage's headline)")
    parser.add_argument("--name", help="ablation name (default: the varied keys' last parts)")
    parser.add_argument("--out", metavar="DIR", help="ablation folder (default: <run_dir>/ablations/<name>)")
    parser.add_argument("--reuse", action="append", default=[], metavar="DIR",
                        help="also reuse finished stages from this run dir or ablation folder (repeatable); the "
                             "pipeline's run dir and the run dir holding --out are always searched")
    parser.add_argument("--dry-run", action="store_true", help="print every job's plan (run, reuse, skip) and exit")
    parser.add_argument("--launcher", metavar="CMD", help="how each stage process starts (as for `run`)")


def main(args) -> int:
    import sys

    from fusionlab.pipeline.ablate import build_ablation, predict, run_ablation
    from fusionlab.pipeline.ablate_table import write_outputs

    overrides = [*args.overrides, *([f"launcher={args.launcher}"] if args.launcher else [])]
    ablation = build_ablation(args.pipeline, args.grid, seeds=args.seeds, stages=args.stages,
                              seed_stages=args.seed_stages, overrides=overrides, out=args.out, name=args.name,
                              metrics=args.metrics, reuse=args.reuse)
    print(f"ablation '{ablation.name}' of {args.pipeline} -> {ablation.out_dir}")
    for p in ablation.points:
        print(f"  p{p.index}: {p.label}")
    print(f"  {len(ablation.points)} point(s) x {ablation.seeds} seed(s) = {len(ablation.jobs)} jobs; "
          f"stages: {', '.join(ablation.selected)}; seed +k goes to: {', '.join(ablation.seed_stages)}")
    if ablation.fixed:
        print(f"  for every job: {' '.join(ablation.fixed)}")
    forecast = predict(ablation)
    runs = sum(action == "run" for rows in forecast for _, action in rows)
    print(f"  stage runs needed: {runs} (the other {sum(map(len, forecast)) - runs} are reused or up to date)")
    if args.dry_run:
        for job, rows in zip(ablation.jobs, forecast, strict=True):
            print(f"\n{job.name} ({job.point.label}; seed +{job.seed}) -> {job.run_dir}")
            width = max(len(name) for name, _ in rows)
            for name, action in rows:
                print(f"  {name:<{width}}  {action}")
        return 0
    results = run_ablation(ablation)
    paths = write_outputs(ablation, results, _command(args))
    failed = [r for r in results if r.status != "ok"]
    print(f"\n{len(results) - len(failed)}/{len(results)} jobs finished; tables: {paths['md']}, {paths['html']}")
    for r in failed:
        print(f"  FAILED {r.job.name} ({r.job.point.label}; seed +{r.job.seed}): {r.error.splitlines()[0]}",
              file=sys.stderr)
    if ablation.home_run is not None:
        _refresh_report(ablation.home_run)
    return 1 if failed else 0


def _command(args) -> str:
    """The command line that reproduces this ablation (for the tables)."""
    import shlex

    parts = ["fusionlab", "ablate", args.pipeline, *args.overrides]
    if args.grid:
        parts += ["--grid", *args.grid]
    parts += ["--seeds", str(args.seeds)]
    for flag, values in (("--stages", args.stages), ("--seed-stages", args.seed_stages)):
        parts += [flag, ",".join(values)] if values else []
    if args.metrics:
        parts += ["--metrics", *args.metrics]
    for flag, value in (("--name", args.name), ("--out", args.out), ("--launcher", args.launcher)):
        parts += [flag, value] if value else []
    for value in args.reuse:
        parts += ["--reuse", value]
    return " ".join(shlex.quote(p) for p in parts)


def _refresh_report(run_dir) -> None:
    """Rebuild the pipeline run's report when it has one, so it links this ablation."""
    from fusionlab.errors import FusionlabError
    from fusionlab.report import REPORT_DIR, build_report

    if (run_dir / REPORT_DIR / "index.html").is_file():
        try:
            print(f"report: {build_report(run_dir)}")
        except FusionlabError as exc:
            print(f"note: the report of {run_dir} was not rebuilt: {exc}")
