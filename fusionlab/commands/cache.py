"""Inspect and check the embedding caches that stage 3 writes (and stage 4 reads).

  fusionlab cache info DIR               entries, shards, fields and encoder of every cache under DIR
  fusionlab cache verify DIR             check every shard against its sha256; exit 1 if any is bad
  fusionlab cache verify --repair DIR    recompute the entries of missing or corrupt shards

DIR is a cache folder (holding index.json), e.g. runs/x/captions/embeddings, or any folder
above one (a stage output folder): every cache below it is handled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "inspect, verify and repair embedding caches (stage 3 embeddings/)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="summarise the caches under DIR")
    info.add_argument("dir", metavar="DIR", help="cache folder or a folder above one")
    verify = sub.add_parser("verify", help="check every shard; --repair recomputes bad ones")
    verify.add_argument("dir", metavar="DIR", help="cache folder or a folder above one")
    verify.add_argument("--repair", action="store_true", help="recompute entries of missing/corrupt shards")


def _caches(root: Path) -> list[Path]:
    from fusionlab.cache.store import INDEX
    from fusionlab.errors import PipelineError

    if not root.exists():
        raise PipelineError(f"'{root}' does not exist; pass a stage 3 output folder or its embeddings/ folder")
    found = sorted({p.parent for p in root.rglob(INDEX) if ".parts" not in p.parts})
    if not found:
        raise PipelineError(f"no embedding cache (index.json) under '{root}'; run stage 3 (captions) first")
    return found


def _info(path: Path) -> None:
    from fusionlab.cache import EmbeddingCache

    cache = EmbeddingCache(path)
    index = cache.index
    size = sum((path / name).stat().st_size for name in index["shards"] if (path / name).is_file())
    enc = index["encoder"]
    print(f"{path}")
    print(f"  kind     {index['kind']}")
    print(f"  entries  {len(cache)}   shards {len(index['shards'])}   {size / 1e6:.2f} MB")
    fields = ", ".join(f"{k} {v['dtype']}{v['shape']}" for k, v in index["fields"].items())
    print(f"  fields   {fields}")
    print(f"  encoder  {enc.get('model')}  weights {str(enc.get('weights_sha256'))[:12]}  "
          f"preprocess {enc.get('preprocess')}")
    if cache.ids:
        first = cache.source(cache.ids[0])
        print(f"  example  {cache.ids[0]}: {str(first.get('text', first))[:100]}")


def main(args: argparse.Namespace) -> int:
    from fusionlab.cache import EmbeddingCache

    caches = _caches(Path(args.dir))
    if args.cache_command == "info":
        for path in caches:
            _info(path)
        return 0
    bad_total = 0
    for path in caches:
        problems = EmbeddingCache(path).verify()
        if not problems:
            print(f"ok       {path} ({len(EmbeddingCache(path))} entries)")
            continue
        for message in problems.values():
            print(f"bad      {message}", file=sys.stderr)
        if args.repair:
            from fusionlab.cache.build import repair
            from fusionlab.cache.encoders import encode_fn_for

            report = repair(path, encode_fn_for(path))
            print(f"repaired {path}: recomputed {len(report.computed)} entries from {', '.join(report.repaired_shards)}")
        else:
            bad_total += len(problems)
    if bad_total:
        print(f"{bad_total} bad shard(s); run `fusionlab cache verify --repair {args.dir}`", file=sys.stderr)
        return 1
    return 0
