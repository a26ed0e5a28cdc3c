"""No label reaches a caption, and every manifest says which pretrained parts ran and which were random."""

from __future__ import annotations

import json
import logging
import shutil

import pytest


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    """A narrow random YOLO saved as a detector/ folder: the captioner's optional detection map."""
    from fusionlab.models.detector import DetectorConfig, build_detector, save_detector

    folder = tmp_path_factory.mktemp("s3det") / "detector"
    cfg = DetectorConfig(width_multiple=0.0625)
    return save_detector(folder, build_detector(cfg, nc=2, names=["person", "car"]), cfg)


def _variant(src, dst, mode: str):
    """The same images with the labels present, absent, or permuted between samples."""
    shutil.copytree(src, dst)
    extras = [p for p in ("labels", "depth", "scenes", "captions.jsonl", "classes.txt") if (dst / p).exists()]
    if mode == "absent":
        for name in extras:
            shutil.rmtree(dst / name) if (dst / name).is_dir() else (dst / name).unlink()
    elif mode == "permuted":
        for folder in ("labels", "depth", "scenes"):
            files = sorted((dst / folder).iterdir())
            payloads = [f.read_bytes() for f in files]
            for f, data in zip(files, payloads[1:] + payloads[:1], strict=True):
                f.write_bytes(data)
        rows = [json.loads(line) for line in (dst / "captions.jsonl").read_text().splitlines()]
        texts = [r["caption"] for r in rows]
        (dst / "captions.jsonl").write_text("".join(json.dumps({"id": r["id"], "caption": t}) + "\n"
                                                    for r, t in zip(rows, texts[2:] + texts[:2], strict=True)))
    return dst


@pytest.fixture
def one_thread():
    """The stage's `cpu_threads: 1` sets torch's global thread count; give the next tests theirs back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_captions_and_embeddings_are_identical_whatever_the_labels(tmp_path, tiny_dataset, stage_config, detector_dir,
                                                                   one_thread):
    """Present, absent or permuted labels / GT depth / scene descriptions: byte-identical outputs."""
    from fusionlab.pipeline.stage_process import run_stage

    assert (tiny_dataset / "labels").is_dir() and (tiny_dataset / "scenes").is_dir()
    outputs = {}
    for mode in ("present", "absent", "permuted"):
        data = _variant(tiny_dataset, tmp_path / f"data-{mode}", mode)
        cfg = {**stage_config(preview=0), "cpu_threads": 1}  # a shared CPU: 1 thread is ~5x faster here
        cfg["data"]["root"] = str(data)
        cfg["model"]["captioner"].update(detector=str(detector_dir), detector_conf=1e-5)  # a random YOLO is unsure
        (tmp_path / f"{mode}.yaml").write_text(json.dumps(cfg))
        (tmp_path / "context.json").write_text(json.dumps({"wandb": {"enabled": False}}))
        out = tmp_path / f"out-{mode}"
        manifest = run_stage(tmp_path / f"{mode}.yaml", out, context_path=tmp_path / "context.json")
        cache = json.loads((out / "embeddings" / "index.json").read_text())
        outputs[mode] = ((out / "captions.jsonl").read_bytes(),
                         {p.name: p.read_bytes() for p in sorted((out / "embeddings").glob("shard-*"))},
                         {k: (v["key"], v["source"]) for k, v in cache["entries"].items()})
        if mode == "present":
            first = manifest
    assert outputs["present"] == outputs["absent"] == outputs["permuted"]
    assert b"person" in outputs["present"][0] or b"car" in outputs["present"][0]  # the detector named objects

    records = {r["component"]: r for r in first["pretrained"]}  # provenance of every pretrained part
    clip = records["tiny CLIP"]
    assert clip["source"] == "random-init" and clip["random"] and clip["weights_sha256"] is None
    assert clip["notice"] == "text guidance used a randomly initialised tiny CLIP: it tests the mechanism, not CLIP's semantics"
    assert records["YOLO detector (caption objects)"]["source"] == "local"
    assert len(records["YOLO detector (caption objects)"]["weights_sha256"]) == 64
    assert "rules" in records["depth-template captioner (rules, a stand-in for the papers' captioners)"]["source"]


def test_dataset_captions_are_never_a_model_input(tiny_dataset, stage_config):
    from fusionlab.errors import ConfigError
    from fusionlab.stages import captions as stage

    cfg = stage.Config.model_validate(stage_config(captioner={"kind": "file", "path": str(tiny_dataset / "captions.jsonl")}))
    with pytest.raises(ConfigError, match="dataset's own captions.jsonl"):
        stage._refuse_dataset_captions(cfg)


def test_stage4_text_on_a_random_clip_warns_once(tmp_path, tiny_dataset, caplog):
    """One warning naming the random CLIP when text guidance is on; none when it is off."""
    from fusionlab.models.text import ClipEncoder
    from fusionlab.provenance import warn_random
    from fusionlab.stages import fusion

    ClipEncoder.from_config({"tiny": {"embed_dim": 32, "vision_width": 32}}).save(tmp_path / "clip")

    def cfg(**over):
        raw = fusion.expand_config({"stage": "fusion", "data": {"root": str(tiny_dataset)},
                                    "inputs": {"clip": str(tmp_path / "clip"), "embeddings": str(tmp_path / "embeddings"),
                                               "prompts": str(tmp_path / "prompts")},
                                    **over})
        return fusion.Config.model_validate(raw)

    with caplog.at_level(logging.WARNING, logger="fusionlab.weights"):
        notices = warn_random(fusion, cfg(preset="text2pixels"), "fusion")
    assert len(caplog.records) == 1 and "text guidance used a randomly initialised tiny CLIP" in caplog.text
    assert notices == [caplog.records[0].getMessage().split(": ", 1)[1]]
    assert cfg(preset="text2pixels").data.flip is False  # a flip would swap the captions' left and right
    caplog.clear()
    assert warn_random(fusion, cfg(preset="text2pixels", text_guidance=False), "fusion") == []
    assert cfg(preset="text2pixels", text_guidance=False).data.flip is True
    # the paper's ImageNet VGG-19 is the default (pre-flight checks it is there); null makes it random
    assert len(warn_random(fusion, cfg(preset="ldfusion"), "fusion")) == 1  # the random CLIP
    random_vgg = cfg(preset="ldfusion", loss={"ldfusion": {"vgg_pretrained": None}})
    assert len(warn_random(fusion, random_vgg, "fusion")) == 2  # random VGG-19 and random CLIP
