"""Pretrained weights: which parts a pipeline's stages want and whether they are here; import YOLO releases.

  fusionlab weights list stages/kaist.yaml        # every pretrained part, present / missing / random
  fusionlab weights import yolov8n.pt --trust     # a trusted ultralytics .pt -> safetensors, once

`list` reads each stage's `pretrained_parts(cfg)` (fusionlab.provenance), the same list the
pre-flight of `fusionlab run` checks; a missing part is shown with the command that fetches it.
"""

HELP = "list the pretrained parts a pipeline wants (and whether each is here), or import a YOLO .pt"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list the pretrained parts of a pipeline or stage YAMLs")
    ls.add_argument("configs", nargs="*", default=["stages/pipeline.yaml"],
                    help="pipeline or stage YAMLs (default: stages/pipeline.yaml)")
    imp = sub.add_parser("import", help="convert a trusted ultralytics .pt into safetensors in the weights cache")
    imp.add_argument("checkpoint", help="an ultralytics detection checkpoint, e.g. yolov8n.pt")
    imp.add_argument("--trust", action="store_true",
                     help="you trust this file (a .pt is a pickle): required, fusionlab never reads one otherwise")
    imp.add_argument("--out", help="output folder (default: <weights cache>/<name>, found by `pretrained: <name>`)")


def _stages(path: str):
    """(label, stage module, validated Config) for a pipeline or a single stage YAML."""
    from pathlib import Path

    from fusionlab.config import load_yaml

    if "stages" in load_yaml(path):
        from fusionlab.pipeline.spec import load_pipeline

        _, specs = load_pipeline(path)
        return [(f"{Path(path).name}:{s.name}", s.module, s.module.Config.model_validate(s.resolved)) for s in specs]
    from fusionlab.pipeline.spec import load_stage_config

    module, resolved = load_stage_config(path)
    return [(path, module, module.Config.model_validate(resolved))]


def _status(part) -> str:
    from fusionlab.weights import online_allowed

    if part.upstream is not None:
        return "from an upstream stage"
    if not part.has_weights:
        return "no weights (rules)"
    if part.spec is None:
        return "RANDOM init (null)"
    found = part.source.find()
    if found is not None:
        return f"present: {found}"
    if online_allowed() and part.source.online is not None:
        return "will download from the hub"
    return "MISSING"


def list_parts(configs: list[str]) -> int:
    from fusionlab.provenance import stage_parts
    from fusionlab.weights import cache_dir, online_allowed

    rows, fixes = [], []
    for path in configs:
        for label, module, cfg in _stages(path):
            for part in stage_parts(module, cfg):
                status = _status(part)
                rows.append((label, part.component, part.key, str(part.spec), status))
                if status == "MISSING" and f"  {part.source.fetch}" not in fixes:
                    fixes.append(f"  {part.source.fetch}")
    if not rows:
        print("no stage of these configs uses a pretrained part")
        return 0
    head = ("stage", "component", "key", "wants", "status")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(5)]
    for row in [head, *rows]:
        print("  ".join(col.ljust(w) for col, w in zip(row, widths, strict=True)).rstrip())
    print(f"\ncache dir: {cache_dir()}   hub downloads: {'allowed' if online_allowed() else 'disabled (offline)'}")
    if fixes:
        print("\nfetch the missing parts on a machine with internet:\n" + "\n".join(fixes))
    return 1 if fixes else 0


def main(args) -> int:
    if args.action == "import":
        from fusionlab.models.yolo_import import import_checkpoint

        dest = import_checkpoint(args.checkpoint, trust=args.trust, out=args.out)
        print(f"imported {args.checkpoint} -> {dest} (safetensors); use `detector.pretrained: {dest.name}`")
        return 0
    return list_parts(args.configs)
