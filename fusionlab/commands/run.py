"""Run a pipeline: every stage in order, each in its own process, skipping what is up to date.

PIPELINE is a pipeline YAML or the name of one that fusionlab ships (`demo`, the embedded
default, works from any directory; `roadscene`, `kaist`, ...).

Examples:
  fusionlab run demo
  fusionlab run stages/pipeline.yaml
  fusionlab run stages/pipeline.yaml --dry-run
  fusionlab run stages/pipeline.yaml --only depth --force depth.trainer.max_epochs=2
  fusionlab run stages/pipeline.yaml trainer.accelerator=gpu trainer.devices=4 trainer.precision=bf16-mixed
"""

HELP = "run a pipeline YAML (plan, skip up-to-date stages, resume interrupted ones)"


def add_arguments(parser) -> None:
    parser.add_argument("pipeline", help="pipeline YAML (e.g. stages/pipeline.yaml) or a shipped pipeline's name "
                                         "(e.g. demo)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides: STAGE.a.b=v for one stage, a.b=v for every stage, run_dir=... for the pipeline")
    parser.add_argument("--only", action="append", metavar="STAGE",
                        help="run only this stage (repeatable, or comma-separated); upstream artifacts come from the run dir")
    parser.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and everything after it")
    parser.add_argument("--force", action="store_true", help="rerun the selected stages even if up to date")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (run or skip, and why) and exit")
    parser.add_argument("--launcher", metavar="CMD",
                        help='how each stage process starts, e.g. "torchrun --nproc_per_node=4" or "srun python" '
                             "(default: this Python; same as the pipeline key `launcher`)")
    parser.add_argument("--no-report", action="store_true", help="do not build the HTML/Markdown report at the end")


def main(args) -> int:
    from fusionlab.errors import PipelineError
    from fusionlab.packaged import find_pipeline
    from fusionlab.pipeline.manifest import read_manifest
    from fusionlab.pipeline.runner import (
        format_plan,
        format_summary,
        plan,
        run_pipeline,
        settle,
        upstream_missing,
        write_summary,
    )
    from fusionlab.pipeline.spec import load_pipeline
    from fusionlab.provenance import notice_block, preflight

    only = [n for item in (args.only or []) for n in item.split(",") if n] or None
    overrides = [*args.overrides, *([f"launcher={args.launcher}"] if args.launcher else [])]
    path = find_pipeline(args.pipeline)
    pipeline, specs = load_pipeline(path, overrides)
    settle(specs)  # a swap that a kill interrupted is completed before planning
    steps = plan(specs, only=only, start=args.start, force=args.force)
    run_dir = specs[0].out_dir.parent  # a pipeline has at least one stage
    print(f"pipeline {path} -> run dir {run_dir}")
    print(format_plan(steps))
    problem = upstream_missing(steps)  # a dry run refuses what the real run would refuse
    if problem:
        raise PipelineError(problem)
    preflight(steps)  # every pretrained part of every stage that will run, before any stage starts
    if args.dry_run:
        return 0
    rows = run_pipeline(pipeline, specs, steps, pipeline_file=str(path.resolve()))
    notice = notice_block({s.name: read_manifest(s.out_dir) for s in specs})
    print(format_summary(rows) + notice)
    write_summary(run_dir, rows, footer=notice)
    if pipeline.report and not args.no_report:
        _build_report(run_dir)
    return 0


def _build_report(run_dir) -> None:
    from fusionlab.report import build_report

    index = build_report(run_dir)
    print(f"\nreport: {index}")
