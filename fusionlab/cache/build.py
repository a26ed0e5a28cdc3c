"""Bringing a cache up to date: find stale entries, encode only those, merge them in.

`plan` compares every requested entry's key (encoder fingerprint + source) with the index and
checks each shard, so exactly the entries whose caption, model or shard changed are
recomputed. Under DDP every rank encodes a disjoint part of the stale entries and writes it
with `write_part`; rank 0 then calls `merge`, which also picks the parts up.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fusionlab.cache.store import (
    FORMAT,
    INDEX,
    SHARD_GLOB,
    EmbeddingCache,
    entry_key,
    load_shard,
    read_index,
    write_index,
    write_shard,
)
from fusionlab.errors import PipelineError

log = logging.getLogger(__name__)
PARTS = ".parts"
EncodeFn = Callable[[list[dict]], dict[str, torch.Tensor]]


@dataclass
class Plan:
    """What `update` must do for a set of requested entries."""

    keys: dict[str, str]  # id -> wanted key
    stale: list[str]  # ids to (re)compute, in request order
    bad_shards: dict[str, str] = field(default_factory=dict)  # shard -> problem
    index: dict | None = None  # the current index, when readable


@dataclass
class UpdateReport:
    total: int = 0
    hits: int = 0
    computed: list[str] = field(default_factory=list)
    removed: int = 0
    repaired_shards: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"total": self.total, "hits": self.hits, "computed": len(self.computed),
                "removed": self.removed, "repaired_shards": self.repaired_shards}


def plan(path: str | Path, sources: dict[str, dict], encoder: dict) -> Plan:
    """Ids whose entry is missing, was built from another source or encoder, or sits on a bad shard."""
    path = Path(path)
    keys = {i: entry_key(encoder, src) for i, src in sources.items()}
    if not (path / INDEX).is_file():
        return Plan(keys, list(sources))
    try:
        index = read_index(path)
    except PipelineError as exc:
        log.warning("%s; rebuilding the whole cache", exc)
        return Plan(keys, list(sources))
    bad = EmbeddingCache(path).verify()
    for problem in bad.values():
        log.warning("%s (its entries are recomputed)", problem)
    entries = index["entries"]
    stale = [i for i in sources
             if i not in entries or entries[i]["key"] != keys[i] or entries[i]["shard"] in bad]
    return Plan(keys, stale, bad, index)


def encode_rows(sources: dict[str, dict], ids: list[str], encode_fn: EncodeFn, batch_size: int,
                progress: bool = True, desc: str = "encode") -> dict[str, dict[str, torch.Tensor]]:
    """Call the encoder on `ids` in batches; return id -> {field: tensor row}."""
    from tqdm.auto import tqdm

    rows: dict[str, dict[str, torch.Tensor]] = {}
    starts = range(0, len(ids), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or not ids, leave=False):
        chunk = ids[start:start + batch_size]
        out = encode_fn([sources[i] for i in chunk])
        for j, sample_id in enumerate(chunk):
            rows[sample_id] = {name: value[j].detach().cpu() for name, value in out.items()}
    return rows


# ---------------------------------------------------------------------------- DDP parts


def write_part(path: str | Path, rank: int, rows: dict[str, dict[str, torch.Tensor]]) -> None:
    """One rank's freshly encoded rows, for rank 0 to merge."""
    from fusionlab.artifacts import atomic_write_json

    parts = Path(path) / PARTS
    ids = list(rows)
    if ids:
        write_shard(parts, f"rank-{rank:05d}.safetensors", _stack(rows, ids))
    atomic_write_json(parts / f"rank-{rank:05d}.json", ids)


def read_parts(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """All ranks' rows (duplicates from padded distributed samplers collapse by id)."""
    from safetensors.torch import load_file

    rows: dict[str, dict[str, torch.Tensor]] = {}
    parts = Path(path) / PARTS
    for ids_file in sorted(parts.glob("rank-*.json")):
        ids = json.loads(ids_file.read_text())
        if not ids:
            continue
        data = load_file(str(ids_file.with_suffix(".safetensors")))
        for j, sample_id in enumerate(ids):
            rows.setdefault(sample_id, {name: t[j] for name, t in data.items()})
    return rows


def clear_parts(path: str | Path) -> None:
    shutil.rmtree(Path(path) / PARTS, ignore_errors=True)


# ---------------------------------------------------------------------------- merging


def _stack(rows: dict[str, dict[str, torch.Tensor]], ids: list[str]) -> dict[str, torch.Tensor]:
    names = list(rows[ids[0]])
    return {name: torch.stack([rows[i][name] for i in ids]) for name in names}


def _next_shard_number(path: Path) -> int:
    numbers = [int(p.stem.split("-")[1]) for p in path.glob(SHARD_GLOB) if p.stem.split("-")[1].isdigit()]
    return max(numbers, default=-1) + 1


def merge(path: str | Path, sources: dict[str, dict], encoder: dict, new_rows: dict[str, dict[str, torch.Tensor]],
          *, kind: str, extra: dict | None = None, shard_size: int = 4096, the_plan: Plan | None = None) -> dict:
    """Rank 0: write new rows as new shards, swap the index in, delete shards nobody points to.

    The index ends up holding exactly the ids of `sources`. Shards that keep less than half of
    their rows alive are compacted (their live rows are copied, not re-encoded).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    the_plan = the_plan or plan(path, sources, encoder)
    new_rows = {**read_parts(path), **new_rows}
    missing = [i for i in the_plan.stale if i not in new_rows]
    if missing:
        raise PipelineError(f"embedding cache '{path}': {len(missing)} stale entries were not encoded "
                            f"(e.g. {missing[:3]}); a rank may have failed, rerun stage 3")
    old = the_plan.index or {"entries": {}, "shards": {}, "fields": {}}
    kept = {i: old["entries"][i] for i in sources if i not in the_plan.stale and i not in new_rows}
    alive: dict[str, int] = {}
    for entry in kept.values():
        alive[entry["shard"]] = alive.get(entry["shard"], 0) + 1
    for name, n_alive in alive.items():
        if n_alive * 2 < old["shards"][name]["rows"]:  # mostly dead: move the live rows
            rows = load_shard(path, name, old["shards"][name])
            for sample_id in [i for i, e in kept.items() if e["shard"] == name]:
                new_rows[sample_id] = {k: v[kept[sample_id]["row"]] for k, v in rows.items()}
                del kept[sample_id]
    entries: dict[str, dict] = dict(kept)
    shards = {name: old["shards"][name] for name in {e["shard"] for e in kept.values()}}
    fresh = [i for i in sources if i in new_rows]
    number = _next_shard_number(path)
    for start in range(0, len(fresh), shard_size):
        chunk = fresh[start:start + shard_size]
        name = f"shard-{number:05d}.safetensors"
        number += 1
        shards[name] = write_shard(path, name, _stack(new_rows, chunk))
        for row, sample_id in enumerate(chunk):
            entries[sample_id] = {"shard": name, "row": row}
    for sample_id in entries:
        entries[sample_id] = {**entries[sample_id], "key": the_plan.keys[sample_id], "source": sources[sample_id]}
    fields = old.get("fields") or {}
    if fresh:
        first = new_rows[fresh[0]]
        fields = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in first.items()}
    index = {"format": FORMAT, "kind": kind, "encoder": encoder, "fields": fields, "extra": extra or old.get("extra", {}),
             "shards": dict(sorted(shards.items())), "entries": {i: entries[i] for i in sources}}
    write_index(path, index)
    for file in path.glob(SHARD_GLOB):
        if file.name not in shards:
            file.unlink()
    clear_parts(path)
    return index


def update(path: str | Path, sources: dict[str, dict], encoder: dict, encode_fn: EncodeFn, *, kind: str,
           batch_size: int = 64, extra: dict | None = None, progress: bool = True) -> UpdateReport:
    """Single-process: bring the cache at `path` to exactly `sources`, encoding only stale entries."""
    the_plan = plan(path, sources, encoder)
    rows = encode_rows(sources, the_plan.stale, encode_fn, batch_size, progress, desc=f"encode {kind}")
    before = set((the_plan.index or {}).get("entries", {}))
    merge(path, sources, encoder, rows, kind=kind, extra=extra, the_plan=the_plan)
    return UpdateReport(total=len(sources), hits=len(sources) - len(the_plan.stale), computed=list(the_plan.stale),
                        removed=len(before - set(sources)), repaired_shards=sorted(the_plan.bad_shards))


def repair(path: str | Path, encode_fn: EncodeFn, *, batch_size: int = 64, progress: bool = True) -> UpdateReport:
    """Recompute the entries of missing or corrupt shards from the sources stored in the index."""
    index = read_index(Path(path))
    sources = {i: e["source"] for i, e in index["entries"].items()}
    return update(path, sources, index["encoder"], encode_fn, kind=index["kind"], batch_size=batch_size,
                  extra=index.get("extra"), progress=progress)
