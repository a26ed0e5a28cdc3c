"""Tiny upstream artifacts for the fusion presets: a synthetic dataset, a tiny random CLIP with
its caption cache and prompt embeddings, and two tiny depth nets - the same files stages 1-3
write, built in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from fusionlab.data.synth import generate

    return generate(tmp_path_factory.mktemp("presets") / "ds", n=8, seed=0, size=(48, 44))


@pytest.fixture(scope="session")
def upstream(tmp_path_factory, tiny_dataset) -> dict[str, str]:
    """{"clip", "prompts", "embeddings", "depth_ir", "depth_vis"} paths for stage 4's `inputs`."""
    from safetensors.torch import save_file

    from fusionlab.cache.build import update
    from fusionlab.cache.encoders import text_encode_fn, text_sources
    from fusionlab.data.datasets import open_dataset
    from fusionlab.models.depth import build_depth_estimator, save_depth_estimator
    from fusionlab.models.text import ClipEncoder

    root = tmp_path_factory.mktemp("upstream")
    torch.manual_seed(0)
    clip = ClipEncoder.from_config({"model": "tiny", "tiny": {"embed_dim": 32, "vision_width": 32, "image_size": 32,
                                                             "patch_size": 8, "context_length": 16}})
    clip.save(root / "clip")
    pooled, _, _ = clip.encode_text(["an infrared image", "a visible gray image",
                                     "a clear image with detailed background and salient objects"])
    save_file({"ir": pooled[0].contiguous(), "vis": pooled[1].contiguous(), "fused": pooled[2].contiguous()},
              str(root / "prompts.safetensors"))
    ids = open_dataset(tiny_dataset).ids
    captions = {i: f"a road scene {n} with a person {n % 3 + 1} m away" for n, i in enumerate(ids)}
    update(root / "embeddings", text_sources(captions), clip.config(), text_encode_fn(clip), kind="text", progress=False)
    for name, channels in (("depth_ir", 1), ("depth_vis", 3)):
        save_depth_estimator(root / name, build_depth_estimator({"in_channels": channels, "base_channels": 4, "levels": 2}))
    return {"clip": str(root / "clip"), "prompts": str(root / "prompts.safetensors"),
            "embeddings": str(root / "embeddings"), "depth_ir": str(root / "depth_ir"),
            "depth_vis": str(root / "depth_vis")}


@pytest.fixture
def stage_config(tiny_dataset, upstream):
    """`stage_config(preset, **overrides)` -> a validated stage-4 Config for the tiny data."""
    from fusionlab.stages import fusion

    tiny_models = {
        "baseline": {"width": 8, "depth": 2},
        "ldnf": {"features": "conv", "width": 8, "n_blocks": 2, "film_hidden": 16},
        "text2pixels": {"width": 8, "paths": 3, "heads": 2, "attn_stride": 4, "num_codes": 16},
        "ldfusion": {"width": 4, "adain_hidden": 8},
        "tgif": {"dim": 8, "heads": 2, "encoder_blocks": 1, "decoder_blocks": 1, "rounds": 2, "attn_stride": 4},
    }
    tiny_losses = {"ldfusion": {"n_patches": 2, "min_entropy": 0.0, "vgg_pretrained": None}}

    def make(preset: str, **overrides):
        raw = {"stage": "fusion", "preset": preset, "model": tiny_models[preset],
               "data": {"root": str(tiny_dataset), "batch_size": 3, "crop_size": None, "val_fraction": 0.25,
                        "flip": False},
               "inputs": upstream, "trainer": {"max_epochs": 4, "enable_progress_bar": False,
                                               "log_every_n_steps": 1},
               "loss": {preset: tiny_losses.get(preset, {})},
               "optim": {"lr": 3e-3, "schedule": "constant", "warmup_epochs": 0}, "eval": {"panels": 1}}
        for key, value in overrides.items():
            node = raw
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return fusion.Config.model_validate(fusion.expand_config(raw))

    return make


@pytest.fixture
def context(tmp_path):
    from fusionlab.stages import fusion
    from fusionlab.stages.base import StageContext, WandbSettings

    return StageContext(name="fusion", out_dir=tmp_path / "fusion", outputs=fusion.OUTPUTS,
                        wandb=WandbSettings(enabled=False))
