"""The on-disk embedding cache: immutable safetensors shards plus one JSON index keyed by sample id.

Why this shape: later stages read embeddings by sample id with zero encoder calls, and a rerun
must recompute exactly the entries whose inputs changed. Each entry records a key (sha256 of
the encoder fingerprint and the entry's source, e.g. its caption) and the source itself, so a
stale entry is recognised by comparing keys and a lost shard can be recomputed from the index
alone. Shards are never modified: new rows go to a new shard, the index is swapped atomically,
then shards without live rows are deleted, so a crash never leaves a half-written cache.

    embeddings/
      index.json              {"format", "kind", "encoder", "fields", "shards", "entries"}
      shard-00000.safetensors  {"pooled": [N,D], "tokens": [N,L,W], "mask": [N,L]}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from fusionlab.artifacts import atomic_write_json, sha256_file
from fusionlab.errors import PipelineError

INDEX = "index.json"
FORMAT = "fusionlab-embeddings/1"
SHARD_GLOB = "shard-*.safetensors"


def digest(obj: Any) -> str:
    """sha256 of a JSON-able object, the unit of every fingerprint here (`artifacts.json_digest`)."""
    from fusionlab.artifacts import json_digest

    return json_digest(obj)


def entry_key(encoder: dict, source: dict) -> str:
    """An entry is valid while neither the encoder (model, weights, preprocessing) nor its source changes."""
    return digest({"encoder": digest(encoder), "source": digest(source)})


def _repair_hint(path: Path) -> str:
    return f"run `fusionlab cache verify --repair {path}` (or rerun stage 3) to recompute it"


class EmbeddingCache:
    """Read access to a cache folder: `EmbeddingCache(dir).get(ids)` -> {field: [B, ...] tensor}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._index: dict | None = None
        self._shards: dict[str, dict[str, torch.Tensor]] = {}

    # ------------------------------------------------------------------ index

    @property
    def index_file(self) -> Path:
        return self.path / INDEX

    def exists(self) -> bool:
        return self.index_file.is_file()

    @property
    def index(self) -> dict:
        if self._index is None:
            self._index = read_index(self.path)
        return self._index

    @property
    def ids(self) -> list[str]:
        return list(self.index["entries"])

    @property
    def fields(self) -> dict[str, dict]:
        return self.index["fields"]

    @property
    def encoder(self) -> dict:
        return self.index["encoder"]

    def __len__(self) -> int:
        return len(self.index["entries"])

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.index["entries"]

    # ------------------------------------------------------------------ reading

    def shard(self, name: str) -> dict[str, torch.Tensor]:
        """Load one shard, checking its sha256 against the index; corrupt -> error naming it."""
        if name not in self._shards:
            self._shards[name] = load_shard(self.path, name, self.index["shards"].get(name))
        return self._shards[name]

    def get(self, ids: list[str] | str, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Stack the cached fields of `ids` (in order), on `device` if given. Unknown ids raise,
        naming the first few."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        entries = self.index["entries"]
        missing = [i for i in ids if i not in entries]
        if missing:
            raise PipelineError(
                f"embedding cache '{self.path}' has no entry for {len(missing)} id(s), e.g. {missing[:3]}; "
                "rerun stage 3 on the same dataset (data.root) that this stage reads"
            )
        out: dict[str, list[torch.Tensor]] = {name: [] for name in self.fields}
        for sample_id in ids:
            entry = entries[sample_id]
            rows = self.shard(entry["shard"])
            for name in out:
                out[name].append(rows[name][entry["row"]])
        return {name: torch.stack(values).to(device) for name, values in out.items()}

    def source(self, sample_id: str) -> dict:
        return self.index["entries"][sample_id]["source"]

    # ------------------------------------------------------------------ checks

    def verify(self) -> dict[str, str]:
        """{shard name: problem} for every shard that is missing, altered or unreadable."""
        problems: dict[str, str] = {}
        for name, meta in sorted(self.index["shards"].items()):
            try:
                load_shard(self.path, name, meta)
            except PipelineError as exc:
                problems[name] = str(exc)
        return problems


def read_index(path: Path) -> dict:
    index_file = Path(path) / INDEX
    if not index_file.is_file():
        raise PipelineError(f"'{path}' is not an embedding cache ({INDEX} is missing); run stage 3 (captions) first")
    try:
        index = json.loads(index_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"embedding cache index '{index_file}' is unreadable ({exc}); "
                            "delete the folder and rerun stage 3") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise PipelineError(f"'{index_file}' is not a {FORMAT} index; delete the folder and rerun stage 3")
    return index


def load_shard(path: Path, name: str, meta: dict | None) -> dict[str, torch.Tensor]:
    """Read a shard after checking it exists, matches its recorded sha256 and has the right rows."""
    from safetensors.torch import load_file

    file = Path(path) / name
    if meta is None:
        raise PipelineError(f"embedding cache shard '{file}' is not listed in {INDEX}; {_repair_hint(path)}")
    if not file.is_file():
        raise PipelineError(f"embedding cache shard '{file}' is missing; {_repair_hint(path)}")
    if sha256_file(file) != meta["sha256"]:
        raise PipelineError(f"embedding cache shard '{file}' is corrupt (sha256 differs from {INDEX}); "
                            f"{_repair_hint(path)}")
    try:
        rows = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types
        raise PipelineError(f"embedding cache shard '{file}' is unreadable ({exc}); {_repair_hint(path)}") from None
    if any(t.shape[0] != meta["rows"] for t in rows.values()):
        raise PipelineError(f"embedding cache shard '{file}' has the wrong number of rows; {_repair_hint(path)}")
    return rows


def write_shard(path: Path, name: str, rows: dict[str, torch.Tensor]) -> dict:
    """Write rows atomically; return the index metadata (sha256, rows) for it."""
    from safetensors.torch import save

    from fusionlab.artifacts import atomic_write_bytes

    data = save({k: v.contiguous().cpu() for k, v in rows.items()})
    atomic_write_bytes(Path(path) / name, data)
    n = next(iter(rows.values())).shape[0]
    return {"sha256": hashlib.sha256(data).hexdigest(), "rows": int(n)}  # of the bytes written, not re-read


def write_index(path: Path, index: dict) -> None:
    atomic_write_json(Path(path) / INDEX, index)
