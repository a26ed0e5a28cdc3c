"""Embedding cache: hits, exact invalidation, corrupt shards, DDP parts, repair."""

import pytest
import torch

from fusionlab.cache import EmbeddingCache
from fusionlab.cache.build import encode_rows, merge, plan, repair, update, write_part
from fusionlab.cache.encoders import text_sources
from fusionlab.errors import PipelineError

ENC = {"model": "fake", "weights_sha256": "w0", "preprocess": {}}


class CountingEncoder:
    """Deterministic fake: features derived from the text, counting every text encoded."""

    def __init__(self):
        self.calls = 0
        self.texts: list[str] = []

    def __call__(self, sources):
        texts = [s["text"] for s in sources]
        self.calls += 1
        self.texts += texts
        codes = torch.tensor([[float(sum(map(ord, t)) % 97), float(len(t))] for t in texts])
        return {"pooled": codes, "tokens": codes[:, None, :].repeat(1, 3, 1), "mask": torch.ones(len(texts), 3, dtype=torch.bool)}


def captions(n=10):
    return {f"s{i:03d}": f"a caption number {i}" for i in range(n)}


def test_rerun_is_a_hit_with_zero_encoder_calls(tmp_path):
    enc = CountingEncoder()
    rep = update(tmp_path, text_sources(captions()), ENC, enc, kind="text", batch_size=4, progress=False)
    assert rep.hits == 0 and len(rep.computed) == 10 and enc.calls == 3
    enc2 = CountingEncoder()
    rep2 = update(tmp_path, text_sources(captions()), ENC, enc2, kind="text", batch_size=4, progress=False)
    assert enc2.calls == 0 and rep2.hits == 10 and rep2.computed == []
    out = EmbeddingCache(tmp_path).get(["s003", "s001"])
    want = CountingEncoder()([{"text": "a caption number 3"}, {"text": "a caption number 1"}])
    assert torch.equal(out["pooled"], want["pooled"])
    assert out["tokens"].shape == (2, 3, 2) and out["mask"].dtype == torch.bool


def test_changed_caption_or_model_invalidates_exactly_the_affected_entries(tmp_path):
    update(tmp_path, text_sources(captions()), ENC, CountingEncoder(), kind="text", progress=False)
    changed = captions()
    changed["s004"] = "a different caption"
    enc = CountingEncoder()
    rep = update(tmp_path, text_sources(changed), ENC, enc, kind="text", progress=False)
    assert enc.texts == ["a different caption"] and rep.hits == 9
    cache = EmbeddingCache(tmp_path)
    assert cache.source("s004") == {"text": "a different caption"}
    assert torch.equal(cache.get("s004")["pooled"], enc([{"text": "a different caption"}])["pooled"])
    # removing a sample drops its entry without encoding anything
    fewer = dict(list(changed.items())[:8])
    enc = CountingEncoder()
    rep = update(tmp_path, text_sources(fewer), ENC, enc, kind="text", progress=False)
    assert enc.calls == 0 and rep.removed == 2 and len(EmbeddingCache(tmp_path)) == 8
    # another model (weights hash) invalidates everything
    enc = CountingEncoder()
    rep = update(tmp_path, text_sources(fewer), {**ENC, "weights_sha256": "w1"}, enc, kind="text", progress=False)
    assert sorted(enc.texts) == sorted(fewer.values()) and rep.hits == 0
    # old shards without live rows are gone
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 1


def test_corrupt_shard_is_named_and_repaired(tmp_path):
    update(tmp_path, text_sources(captions(6)), ENC, CountingEncoder(), kind="text", progress=False)
    update(tmp_path, text_sources({**captions(6), "s005": "new"}), ENC, CountingEncoder(), kind="text", progress=False)
    shards = sorted(tmp_path.glob("shard-*.safetensors"))
    assert len(shards) == 2
    big = shards[0]
    data = bytearray(big.read_bytes())
    data[-5] ^= 0xFF
    big.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=big.name) as err:
        EmbeddingCache(tmp_path).get(["s000"])
    assert "--repair" in str(err.value)
    assert list(EmbeddingCache(tmp_path).verify()) == [big.name]
    enc = CountingEncoder()
    rep = repair(tmp_path, enc, progress=False)
    assert sorted(enc.texts) == [f"a caption number {i}" for i in range(5)]  # exactly the corrupt shard's rows
    assert rep.repaired_shards == [big.name]
    assert EmbeddingCache(tmp_path).verify() == {}
    assert EmbeddingCache(tmp_path).get(["s000", "s005"])["pooled"].shape == (2, 2)


def test_missing_shard_and_unknown_id_errors(tmp_path):
    update(tmp_path, text_sources(captions(3)), ENC, CountingEncoder(), kind="text", progress=False)
    with pytest.raises(PipelineError, match="no entry for 1 id"):
        EmbeddingCache(tmp_path).get(["nope"])
    shard = next(tmp_path.glob("shard-*.safetensors"))
    shard.unlink()
    with pytest.raises(PipelineError, match=f"{shard.name}' is missing"):
        EmbeddingCache(tmp_path).get(["s000"])
    with pytest.raises(PipelineError, match="not an embedding cache"):
        EmbeddingCache(tmp_path / "nothing").get(["s000"])


def test_ddp_ranks_encode_disjoint_parts_and_rank0_merges(tmp_path):
    sources = text_sources(captions(7))
    the_plan = plan(tmp_path, sources, ENC)
    world = 2
    encoders = [CountingEncoder() for _ in range(world)]
    for rank in range(world):  # what each rank does before the barrier
        mine = the_plan.stale[rank::world]
        write_part(tmp_path, rank, encode_rows(sources, mine, encoders[rank], 2, progress=False))
    assert not set(encoders[0].texts) & set(encoders[1].texts)
    assert len(encoders[0].texts) + len(encoders[1].texts) == 7
    merge(tmp_path, sources, ENC, {}, kind="text", the_plan=the_plan)  # rank 0 after the barrier
    assert not (tmp_path / ".parts").exists()
    enc = CountingEncoder()
    assert update(tmp_path, sources, ENC, enc, kind="text", progress=False).hits == 7 and enc.calls == 0


def test_merge_refuses_when_a_rank_did_not_deliver(tmp_path):
    sources = text_sources(captions(4))
    the_plan = plan(tmp_path, sources, ENC)
    write_part(tmp_path, 0, encode_rows(sources, the_plan.stale[0::2], CountingEncoder(), 2, progress=False))
    with pytest.raises(PipelineError, match="were not encoded"):
        merge(tmp_path, sources, ENC, {}, kind="text", the_plan=the_plan)
