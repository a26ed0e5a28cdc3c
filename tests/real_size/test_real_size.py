"""The real-weights path at real size, offline: what a user with downloaded weights runs.

Each real architecture is built with random weights and saved where a download leaves it, in the
library's own file layout inside the fusionlab weights cache (`hf download --local-dir`, torch.hub's
checkpoints/, a YOLO release imported with `fusionlab weights import --trust`). Then
`fusionlab run` goes through the real resolver and loaders, offline: stage 1 fine-tunes Depth
Anything V2 (metric, small), stage 3 captions with BLIP base + YOLOv8n and encodes with CLIP
ViT-B/32 (openai layout, QuickGELU), stage 4 trains `ldnf` and `ldfusion` (VGG-19, CLIP at 224 px),
stage 5 runs bilevel YOLOv8n, and `fusionlab fuse` fuses 2 pairs. Per step it records the CPU
time and the peak RSS of the child processes (`measured`); the table goes to docs/results.md.

Slow (minutes, several GB): `make test-full`. Set FUSIONLAB_REAL_SIZE_TABLE=<file> to keep the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CLIP_REPO = "timm--vit_base_patch32_clip_224.openai"
DEPTH = "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf"
BLIP = "Salesforce/blip-image-captioning-base"

MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.time()
code = subprocess.run(sys.argv[2:]).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": code, "cpu_s": r.ru_utime + r.ru_stime, "peak_rss_mb": r.ru_maxrss / 1024,
           "wall_s": time.time() - start}, open(sys.argv[1], "w"))
sys.exit(code)
"""


def measured(cmd: list[str], env: dict, tmp: Path) -> dict:
    """Run `cmd` in a fresh child and read getrusage(RUSAGE_CHILDREN) there: the CPU time and the
    peak RSS of that command and every process it waited for (the stage process)."""
    out = tmp / "usage.json"
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(out), *cmd], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[2:5])} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return {**json.loads(out.read_text()), "stdout": proc.stdout}


# --------------------------------------------------------------------------- real architectures, random weights


def place_clip(cache: Path) -> Path:
    """open_clip ViT-B-32 as `hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors` leaves it."""
    import open_clip
    from safetensors.torch import save_file

    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    file = cache / CLIP_REPO / "open_clip_model.safetensors"
    file.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(file))
    return file


def place_vgg(cache: Path) -> Path:
    """torchvision VGG-19 as torch.hub downloads IMAGENET1K_V1 (checkpoints/vgg19-dcbb9e9d.pth, a state dict)."""
    import torch
    import torchvision

    file = cache / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    file.parent.mkdir(parents=True)
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), file)
    return file


def place_blip(cache: Path) -> Path:
    """BLIP base captioning (ViT-B/16 at 384 px + BERT-base decoder) as `hf download` leaves the repo.

    The tokenizer is a stand-in with BERT's special-token ids and vocabulary size (no vocab offline)."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = cache / BLIP.replace("/", "--")
    BlipForConditionalGeneration(BlipConfig()).save_pretrained(folder)
    words = ("a an the image photo infrared with of car person people at near mid far range on left right centre "
             "in warm faint object upright compact wide thermal visible background night day , . ;").split()
    vocab = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"[unused{i}]" for i in range(99, 99 + 30522 - len(vocab))]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tok).save_pretrained(folder)
    return folder


def place_depth(cache: Path) -> Path:
    """Depth Anything V2 Metric-Outdoor Small (DINOv2-S + DPT head, 25M parameters) as `hf download` leaves it."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    folder = cache / DEPTH.replace("/", "--")
    config = DepthAnythingConfig(depth_estimation_type="metric", max_depth=80)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def place_yolo(tmp: Path) -> Path:
    """YOLOv8n (80 COCO classes) saved as ultralytics saves a release .pt: a pickle, imported with --trust."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=80, verbose=False)
    model.names = {i: f"class{i}" for i in range(80)}
    model.names[0] = "person"
    file = tmp / "yolov8n.pt"
    torch.save({"model": model.half(), "ema": None, "epoch": -1, "date": None}, file)
    return file


# --------------------------------------------------------------------------- the pipeline


def pipeline_yaml(tmp: Path) -> Path:
    det = {"pretrained": "yolov8n", "width_multiple": None, "depth_multiple": None, "imgsz": 320}
    no_inputs = {"depth_ir": None, "depth_vis": None, "denoiser": None, "embeddings": None}
    stages = [
        {"name": "scenes", "config": "0-scenes.yaml", "set": {"n": 8}},
        {"name": "depth", "config": "1-depth.yaml", "set": {
            "model.arch": "hf", "model.pretrained": DEPTH, "train.lr": 1e-4, "trainer.max_epochs": 1,
            "data.batch_size": 4}},
        {"name": "denoiser", "config": "2-denoiser.yaml", "set": {
            "trainer.max_epochs": 1, "train.samples": 1, "train.sample_steps": 2}},
        {"name": "captions", "config": "3-captions.yaml", "set": {
            "model.captioner.kind": "blip", "model.captioner.pretrained": BLIP, "model.captioner.max_new_tokens": 12,
            "model.captioner.detector": "yolov8n", "model.clip.model": "ViT-B-32", "model.clip.pretrained": "openai",
            "data.batch_size": 8}},
        {"name": "fusion_ldnf", "config": "4-fusion.yaml", "set": {"preset": "ldnf", "trainer.max_epochs": 1}},
        {"name": "fusion_ldfusion", "config": "4-fusion.yaml", "set": {
            "preset": "ldfusion", "loss.ldfusion.vgg_pretrained": "IMAGENET1K_V1", "trainer.max_epochs": 1,
            "inputs": {**no_inputs, "clip": "${captions.outputs.clip}",
                       "prompts": "${captions.outputs.prompts.safetensors}"}}},
        {"name": "detect", "config": "5-detect.yaml", "set": {
            "fusion": "${fusion_ldnf.outputs.fusion}", "detector": det, "trainer.max_epochs": 1,
            "protocol": {"epochs": 1, "batch_size": 4, "detector": det}}},
    ]
    for s in stages:
        s["config"] = str(REPO / "stages" / s["config"])
    path = tmp / "real-size.yaml"
    path.write_text(json.dumps({"run_dir": str(tmp / "run"), "wandb": {"enabled": False}, "report": True,
                                "stages": stages}, indent=1))
    return path


def test_real_architectures_run_offline_through_the_resolver(tmp_path):
    from fusionlab.artifacts import sha256_file

    cache = tmp_path / "weights"
    env = {**os.environ, "FUSIONLAB_WEIGHTS": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "YOLO_OFFLINE": "1", "WANDB_MODE": "disabled", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch-home"), "PYTHONPATH": str(REPO)}
    placed = {"clip": place_clip(cache), "vgg": place_vgg(cache), "blip": place_blip(cache) / "model.safetensors",
              "depth": place_depth(cache) / "model.safetensors"}
    fl = [sys.executable, "-m", "fusionlab"]
    rows = [("weights import yolov8n.pt --trust", measured([*fl, "weights", "import", str(place_yolo(tmp_path)),
                                                            "--trust"], env, tmp_path))]
    placed["yolo"] = cache / "yolov8n" / "model.safetensors"
    pipeline = pipeline_yaml(tmp_path)
    listing = subprocess.run([*fl, "weights", "list", str(pipeline)], env=env, capture_output=True, text=True)
    assert listing.returncode == 0 and "MISSING" not in listing.stdout and "RANDOM" not in listing.stdout, listing.stdout

    names = ["scenes", "depth", "denoiser", "captions", "fusion_ldnf", "fusion_ldfusion", "detect"]
    for name in names:
        rows.append((f"stage {name}", measured([*fl, "run", str(pipeline), "--only", name, "--no-report"], env, tmp_path)))
    run = tmp_path / "run"
    pairs = tmp_path / "pairs"
    for sub in ("ir", "vi"):
        (pairs / sub).mkdir(parents=True)
        for f in sorted((run / "scenes" / "dataset" / sub).iterdir())[:2]:
            (pairs / sub / f.name).write_bytes(f.read_bytes())
    rows.append(("fuse 2 pairs (ldnf)", measured([*fl, "fuse", "--checkpoint", str(run / "fusion_ldnf" / "fusion"),
                                                  "--ir", str(pairs / "ir"), "--vi", str(pairs / "vi"), "--out",
                                                  str(tmp_path / "fused"), "--captions",
                                                  str(run / "captions" / "captions.jsonl"), "--clip",
                                                  str(run / "captions" / "clip")], env, tmp_path)))
    assert len(list((tmp_path / "fused").glob("*.png"))) == 2

    manifests = {n: json.loads((run / n / "manifest.json").read_text()) for n in names}
    records = {(n, r["key"]): r for n, m in manifests.items() for r in m["pretrained"]}
    expect = {("depth", "model.pretrained"): ("hub", placed["depth"]),
              ("captions", "model.clip.pretrained"): ("hub", placed["clip"]),
              ("captions", "model.captioner.pretrained"): ("hub", placed["blip"]),
              ("captions", "model.captioner.detector"): ("local", placed["yolo"]),
              ("fusion_ldfusion", "loss.ldfusion.vgg_pretrained"): ("url", placed["vgg"]),
              ("detect", "detector.pretrained"): ("local", placed["yolo"])}
    for where, (source, file) in expect.items():
        rec = records[where]
        assert rec["source"] == source and not rec["random"], rec
        assert rec["weights_sha256"] == sha256_file(file), where
    assert not any(r["random"] for r in records.values()), [r for r in records.values() if r["random"]]
    assert json.loads((run / "captions" / "clip" / "config.json").read_text())["model_cfg"]["quick_gelu"] is True
    assert manifests["fusion_ldfusion"]["metrics"]["train/loss_last"] is not None

    table = ["| step | CPU time (s) | peak RSS (MiB) | wall (s) |", "|---|---|---|---|"]
    table += [f"| {label} | {u['cpu_s']:.0f} | {u['peak_rss_mb']:.0f} | {u['wall_s']:.0f} |" for label, u in rows]
    text = "\n".join(table) + "\n"
    print("\n" + text)
    if os.environ.get("FUSIONLAB_REAL_SIZE_TABLE"):
        Path(os.environ["FUSIONLAB_REAL_SIZE_TABLE"]).write_text(text)
