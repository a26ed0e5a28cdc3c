"""Rebuild the report of a run dir: report/index.html (self-contained) and report/report.md.

`fusionlab run` builds it at the end of every run; this regenerates it, e.g. after a stage ran alone.
"""

HELP = "rebuild RUN_DIR/report/index.html and report.md from the stages' manifests"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a pipeline run dir, e.g. runs/demo")


def main(args) -> int:
    from pathlib import Path

    from fusionlab.errors import PipelineError
    from fusionlab.report import build_report

    if not Path(args.run_dir).is_dir():
        raise PipelineError(f"run dir '{args.run_dir}' does not exist (run a pipeline first: `fusionlab run PIPELINE`)")
    print(f"report: {build_report(args.run_dir)}")
    return 0
