"""Show which pretrained weights each stage config asks for, and whether they are available.

A key named `pretrained` (or ending in `_pretrained`) holds `<hub id | local path | null>`.
Availability follows the resolver: local path > cache ($FUSIONLAB_WEIGHTS) > hub (when online).
"""

HELP = "list the pretrained weights that stage configs want, and whether each is available"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list wanted weights for a pipeline or stage YAMLs")
    ls.add_argument("configs", nargs="*", default=["stages/pipeline.yaml"],
                    help="pipeline or stage YAMLs (default: stages/pipeline.yaml)")


def _wanted(obj, prefix=""):
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{prefix}{key}"
            if (key == "pretrained" or key.endswith("_pretrained")) and (value is None or isinstance(value, str)):
                yield path, value
            else:
                yield from _wanted(value, path + ".")


def main(args) -> int:
    from fusionlab.config import load_yaml
    from fusionlab.errors import WeightsMissingError
    from fusionlab.weights import cache_dir, is_local, online_allowed, resolve

    rows = []
    for cfg in args.configs:
        data = load_yaml(cfg)
        if "stages" in data:
            from pathlib import Path

            from fusionlab.pipeline.spec import load_pipeline

            _, specs = load_pipeline(cfg)
            sources = [(f"{Path(cfg).name}:{s.name}", s.symbolic) for s in specs]
        else:
            sources = [(cfg, data)]
        for source, config in sources:
            for key, spec in _wanted(config):
                if spec is None:
                    status = "random init (null)"
                else:
                    try:
                        found = resolve(spec, what=source, key=key)
                        status = f"local: {found}" if is_local(found) else "will download from the hub"
                    except WeightsMissingError:
                        status = "MISSING (offline and not found locally)"
                rows.append((source, key, str(spec), status))
    if not rows:
        print("no pretrained weights are configured (every model starts from random initialisation)")
        return 0
    widths = [max(len(r[i]) for r in rows + [("stage", "key", "wants", "status")]) for i in range(4)]
    for row in [("stage", "key", "wants", "status"), *rows]:
        print("  ".join(col.ljust(w) for col, w in zip(row, widths, strict=True)))
    print(f"\ncache dir: {cache_dir()}   hub downloads: {'allowed' if online_allowed() else 'disabled (offline)'}")
    return 1 if any(r[3].startswith("MISSING") for r in rows) else 0
