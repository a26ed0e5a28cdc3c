"""The weights resolver: local path > caches > hub, one clear error when offline, and provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionlab import weights
from fusionlab.errors import WeightsMissingError

REPO = Path(__file__).resolve().parents[2]


def test_none_means_random_init():
    assert weights.resolve(None, what="depth net") is None


def test_local_path_then_cache_then_offline_error(tmp_path, monkeypatch):
    local = tmp_path / "my-weights"
    local.mkdir()
    assert weights.resolve(str(local), what="x") == str(local)

    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "cache" / "Intel--dpt-hybrid-midas").mkdir(parents=True)
    (tmp_path / "cache" / "Intel--dpt-hybrid-midas" / "model.safetensors").write_bytes(b"w")
    assert weights.resolve("Intel/dpt-hybrid-midas", what="x").endswith("Intel--dpt-hybrid-midas")

    with pytest.raises(WeightsMissingError) as err:
        weights.resolve("LiheYoung/depth-anything-small-hf", what="stage 1 depth net", key="model.pretrained")
    msg = str(err.value)
    assert "stage 1 depth net" in msg and "model.pretrained" in msg and "LiheYoung/depth-anything-small-hf" in msg
    assert "null" in msg and "hf download LiheYoung/depth-anything-small-hf --local-dir" in msg
    assert "huggingface-cli" not in msg  # huggingface_hub >= 1.0 has only `hf`


def test_online_returns_hub_id(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FUSIONLAB_OFFLINE", "YOLO_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert weights.resolve("org/model", what="x") == "org/model"


def test_missing_local_path_is_an_error_even_online(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        weights.resolve(str(tmp_path / "nope.safetensors").replace(str(tmp_path), "./nope"), what="x")


def test_loading_turns_download_failures_into_the_clear_error():
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(WeightsMissingError, match="could not load pretrained weights 'org/m'.*config key 'clip.pretrained'"):
        with weights.loading("CLIP", "clip.pretrained", "org/m"):
            raise OSError("We couldn't connect to 'https://huggingface.co'") from LocalEntryNotFoundError("offline")
    with pytest.raises(OSError, match="disk full"):  # not a hub/network error, no local weights: untouched
        with weights.loading("CLIP", "clip.pretrained", "org/m"):
            raise OSError("disk full")
    with pytest.raises(ZeroDivisionError):
        with weights.loading("CLIP", "clip.pretrained", "org/m"):
            raise ZeroDivisionError


def test_sources_find_the_libraries_own_layouts_and_revision(tmp_path, monkeypatch):
    """hf download --local-dir (with its metadata), the hub cache, torch.hub's checkpoints dir."""
    import huggingface_hub
    import torch
    import torchvision
    from huggingface_hub._local_folder import write_download_metadata

    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path / "cache"))
    src = weights.hub_source("org/model")
    assert src.find() is None and src.fetch == f"hf download org/model --local-dir {tmp_path / 'cache' / 'org--model'}"
    (src.local).mkdir(parents=True)
    (src.local / "model.safetensors").write_bytes(b"w")
    write_download_metadata(src.local, "model.safetensors", "a" * 40, "etag")
    assert src.find() == src.local and weights.hub_revision(src.local) == "a" * 40

    hub = tmp_path / "hub"  # the Hugging Face hub cache layout: models--org--other/{refs,snapshots}
    snap = hub / "models--org--other" / "snapshots" / ("b" * 40)
    snap.mkdir(parents=True)
    (hub / "models--org--other" / "refs").mkdir()
    (hub / "models--org--other" / "refs" / "main").write_text("b" * 40)
    for name in ("config.json", "model.safetensors"):
        (snap / name).write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    found = weights.hub_source("org/other").find()
    assert found == snap and weights.hub_revision(found) == "b" * 40

    vgg = weights.torchvision_source(torchvision.models.VGG19_Weights, "IMAGENET1K_V1")
    assert vgg.local == tmp_path / "cache" / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert vgg.fetch.startswith("curl -L --create-dirs -o") and vgg.fetch.endswith("vgg19-dcbb9e9d.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torchhub"))
    (tmp_path / "torchhub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torchhub" / "checkpoints" / "vgg19-dcbb9e9d.pth").write_bytes(b"w")
    assert vgg.find() == tmp_path / "torchhub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    clip = weights.open_clip_source("ViT-B-32", "openai")
    assert clip.hub_id == "timm/vit_base_patch32_clip_224.openai" and clip.files == ("open_clip_model.safetensors",)
    assert "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors --local-dir" in clip.fetch


def test_weights_list_cli(cli_inproc, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path / "cache"))
    cfg = tmp_path / "s.yaml"
    cfg.write_text("stage: depth\ndata: {root: x}\nmodel: {arch: hf, pretrained: org/missing}\n")
    proc = cli_inproc("weights", "list", str(cfg), check=False)
    assert proc.returncode == 1
    assert "model.pretrained" in proc.stdout and "MISSING" in proc.stdout
    assert f"hf download org/missing --local-dir {tmp_path / 'cache' / 'org--missing'}" in proc.stdout
    (tmp_path / "cache" / "org--missing").mkdir(parents=True)
    (tmp_path / "cache" / "org--missing" / "model.safetensors").write_bytes(b"w")
    proc = cli_inproc("weights", "list", str(cfg), check=False)
    assert proc.returncode == 0 and "present:" in proc.stdout
    proc = cli_inproc("weights", "list", "stages/pipeline.yaml")  # the demo: random tiny parts, said so
    assert "RANDOM init" in proc.stdout and "tiny CLIP" in proc.stdout


def test_preflight_lists_every_missing_part_before_any_stage_starts(cli_inproc, tmp_path, monkeypatch):
    """Offline: one message with each missing part and its fetch command; not even the first stage ran."""
    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path / "cache"))
    (tmp_path / "p.yaml").write_text(f"""
run_dir: {tmp_path / 'run'}
wandb: {{enabled: false}}
stages:
  - {{name: scenes, config: {REPO}/stages/0-scenes.yaml, set: {{n: 4}}}}
  - name: depth
    config: {REPO}/stages/1-depth.yaml
    set: {{model.arch: hf, model.pretrained: org/missing-depth}}
  - name: captions
    config: {REPO}/stages/3-captions.yaml
    set: {{model.clip.model: ViT-B-32, model.clip.pretrained: openai}}
""")
    for args in (("--dry-run",), ()):
        proc = cli_inproc("run", str(tmp_path / "p.yaml"), *args, check=False)
        assert proc.returncode == 2
        err = proc.stderr
        assert "2 pretrained part(s) are missing" in err and "no stage was started" in err
        assert f"hf download org/missing-depth --local-dir {tmp_path / 'cache' / 'org--missing-depth'}" in err
        assert "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors" in err
        assert "depth.model.pretrained=/path/to/local/weights" in err and "depth.model.arch=compact" in err
        assert not (tmp_path / "run").exists()  # the scenes stage never started


def _tiny_yolo_pt(path):
    """An ultralytics-style checkpoint (a pickle) of a narrow yolov8n, as `yolo train` saves one."""
    import torch

    from fusionlab.models.detector import DetectorConfig, build_detector

    model = build_detector(DetectorConfig(width_multiple=0.0625), nc=3, names=["a", "b", "c"])
    torch.save({"model": model.half(), "ema": None, "epoch": -1}, path)
    return model.float()


def test_untrusted_pt_is_refused_and_a_trusted_import_is_pickle_free_afterwards(cli_inproc, tmp_path, monkeypatch):
    import torch

    from fusionlab.models.detector import DetectorConfig, build_detector

    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path / "cache"))
    pt = tmp_path / "tinyolo.pt"
    original = _tiny_yolo_pt(pt)
    proc = cli_inproc("weights", "import", str(pt), check=False)
    assert proc.returncode == 2 and "refused to read" in proc.stderr and "--trust" in proc.stderr
    with pytest.raises(WeightsMissingError, match="is an ultralytics .pt checkpoint, a pickle.*weights import"):
        build_detector(DetectorConfig(width_multiple=0.0625, pretrained=str(pt)), nc=2)
    assert not (tmp_path / "cache").exists()  # nothing was read or written
    from fusionlab.provenance import detector_part

    assert detector_part(str(pt), "detector.pretrained", "the detector").missing()  # the pre-flight says: import it

    proc = cli_inproc("weights", "import", str(pt), "--trust")
    folder = tmp_path / "cache" / "tinyolo"
    assert "detector.pretrained: tinyolo" in proc.stdout
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "imported.json"}
    assert "model" in json.loads((folder / "config.json").read_text())  # the architecture travels as JSON

    def no_unpickling(*a, **k):
        raise AssertionError("a later load unpickled a file")

    monkeypatch.setattr(torch, "load", no_unpickling)
    fresh = build_detector(DetectorConfig(width_multiple=0.0625, pretrained="tinyolo"), nc=2, names=["x", "y"])
    same = {k for k, v in fresh.state_dict().items() if torch.equal(v.float(), original.state_dict()[k].float())}
    assert "model.0.conv.weight" in same and int(fresh.model[-1].nc) == 2  # backbone kept, new class head
    rec = detector_part("tinyolo", "detector.pretrained", "the detector").record()
    assert rec["source"] == "local" and rec["imported"]["sha256"] and rec["weights_sha256"] and not rec["random"]


def test_random_weights_notice_in_the_summary_and_the_report(tmp_path):
    """Built from the manifests' `pretrained` records: one line per random component, naming its stages."""
    import json

    from fusionlab.provenance import notice_block
    from fusionlab.report import build_report

    clip = {"component": "tiny CLIP", "key": "model.clip.pretrained", "wants": None, "random": True,
            "source": "random-init", "weights_sha256": None,
            "notice": "text guidance used a randomly initialised tiny CLIP: it tests the mechanism, not CLIP's semantics"}
    vgg = {"component": "VGG-19", "key": "loss.ldfusion.vgg_pretrained", "wants": "IMAGENET1K_V1", "random": False,
           "source": "url", "url": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "weights_sha256": "ab" * 32}
    manifests = {"captions": {"pretrained": [clip]}, "fusion": {"pretrained": [{**clip, "source": "upstream"}, vgg]},
                 "denoiser": {"pretrained": []}}
    block = notice_block(manifests)
    assert "**Random weights.**" in block and block.count("\n- ") == 1
    assert "randomly initialised tiny CLIP: it tests the mechanism, not CLIP's semantics (stages captions, fusion)" in block
    assert notice_block({"fusion": {"pretrained": [vgg]}}) == ""
    for i, (name, man) in enumerate(manifests.items()):  # started_at: the report's stage order
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({**man, "stage": name, "metrics": {},
                                                                   "started_at": f"2026-01-0{i + 1}T00:00:00"}))
    build_report(tmp_path)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Pretrained parts" in md and "(stages captions, fusion)" in md and "**random-init**" in md
    assert "vgg19-dcbb9e9d.pth" in md and '<div class="warn">' in (tmp_path / "report" / "index.html").read_text()
