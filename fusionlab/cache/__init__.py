"""Embedding cache: safetensors shards + a JSON index keyed by sample id (see `store`).

Stage 3 fills it (`build.update`, or `build.plan` / `write_part` / `merge` under DDP); stage 4
reads it with `EmbeddingCache(path).get(ids)` and never calls an encoder.
"""

from fusionlab.cache.store import EmbeddingCache

__all__ = ["EmbeddingCache"]
