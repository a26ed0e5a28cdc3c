"""The `fusionlab` command line: a thin argparse front over `fusionlab.commands.*`.

Every module in `fusionlab/commands/` is one subcommand (`detect_eval.py` is `detect-eval`).
Each defines `HELP` (one line), `add_arguments(parser)` and `main(args) -> int`, and imports
only the standard library at module level, so `fusionlab --help` stays fast; heavy imports
(torch, lightning, ...) happen inside `main`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from fusionlab import __version__


def _command_modules():
    import fusionlab.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield info.name.replace("_", "-"), importlib.import_module(f"fusionlab.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusionlab",
        description="Text- and depth-guided infrared-visible image fusion pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"fusionlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules():
        p = sub.add_parser(name, help=module.HELP, description=(module.__doc__ or module.HELP).strip())
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `KEY=VALUE` overrides may come after options (`run p.yaml --only x a.b=1`).
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "_main"):
        parser.print_help()
        return 0
    from fusionlab.errors import FusionlabError

    try:
        return int(args._main(args) or 0)
    except FusionlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
