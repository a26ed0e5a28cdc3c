"""List the trained models shipped with fusionlab, or ship a new one from a stage-4 run.

`fusionlab fuse` uses the default one when --checkpoint is omitted; pass a shipped model's name
as --checkpoint to pick another. Each model's manifest says how it was trained (command, commit,
training data) and what it scored on which test set.

Examples:
  fusionlab models
  fusionlab models --json
  fusionlab models ship runs/roadscene/fusion --name baseline_roadscene --command "fusionlab run stages/roadscene.yaml"
"""

from __future__ import annotations

import argparse

HELP = "list the shipped trained models (what they were trained and scored on), or ship one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "ship"], default="list")
    parser.add_argument("stage_dir", nargs="?", help="ship: a finished stage-4 folder, e.g. runs/roadscene/fusion")
    parser.add_argument("--name", help="ship: the shipped model's name (a folder under fusionlab/shipped/)")
    parser.add_argument("--command", dest="train_command", help="ship: the command that trained it (recorded)")
    parser.add_argument("--json", action="store_true", help="list: print the manifests as JSON")


def main(args: argparse.Namespace) -> int:
    from fusionlab.errors import ConfigError
    from fusionlab.shipped import DEFAULT, ship, shipped_models

    if args.action == "ship":
        if not (args.stage_dir and args.name and args.train_command):
            raise ConfigError("models ship needs STAGE_DIR, --name and --command (the `fusionlab run` that trained it)")
        path = ship(args.stage_dir, args.name, args.train_command)
        print(f"shipped {args.stage_dir} as '{args.name}' -> {path}")
        return 0
    models = shipped_models()
    if args.json:
        import json

        print(json.dumps(models, indent=2, sort_keys=True))
        return 0
    if not models:
        print("no shipped models")
        return 0
    from fusionlab.tables import markdown_table

    names = list(dict.fromkeys(k for m in models.values() for k in m["scored_on"].get("metrics", m["metrics"])))
    rows = []
    for name, m in models.items():
        scored = m["scored_on"]
        rows.append([name + (" (default)" if name == DEFAULT else ""), m["preset"], m["training_data"]["root"],
                     f"{scored['root']} ({scored['images']} pairs, {scored['convention']})",
                     *(f"{m['metrics'][k]:.4f}" if k in m["metrics"] else "-" for k in names)])
    print(markdown_table(["model", "preset", "trained on", "scored on", *names], rows))
    for name, m in models.items():
        t = m["trained_by"]
        print(f"\n{name}: `{t['command']}` at commit {t.get('git_sha') or '?'} (fusionlab {t.get('fusionlab_version')}), "
              f"{m['training']['epochs']} epochs")
    return 0
