"""Tiny end-to-end runs of the depth and denoiser stages through their real `run()`."""

import json

import pytest
import torch

from fusionlab.stages.base import StageContext, WandbSettings

TRAINER = {"max_epochs": 2, "enable_progress_bar": False, "log_every_n_steps": 1, "accelerator": "cpu", "devices": 1}


def _ctx(name, out, outputs):
    return StageContext(name=name, out_dir=out, outputs=outputs, wandb=WandbSettings(enabled=False))


def depth_config(root, **trainer):
    from fusionlab.stages.depth import Config

    return Config.model_validate({
        "stage": "depth", "data": {"root": str(root), "batch_size": 4, "val_fraction": 0.25},
        "model": {"base_channels": 4, "levels": 2}, "train": {"panel_images": 2},
        "trainer": {**TRAINER, **trainer},
    })


def denoiser_config(root, **trainer):
    from fusionlab.stages.denoiser import Config

    return Config.model_validate({
        "stage": "denoiser", "data": {"root": str(root), "batch_size": 4, "crop_size": 16, "val_fraction": 0.25},
        "model": {"block_out_channels": [8, 16], "norm_num_groups": 4, "sample_size": 16},
        "schedule": {"num_train_timesteps": 50},
        "train": {"samples": 2, "sample_size": [16, 16], "sample_steps": 2, "val_crop": 16},
        "trainer": {**TRAINER, **trainer},
    })


def test_depth_stage_trains_both_nets_and_writes_outputs(tmp_path, tiny_dataset):
    from fusionlab.models.depth import load_depth_estimator
    from fusionlab.stages.depth import OUTPUTS, run

    metrics = run(depth_config(tiny_dataset), _ctx("depth", tmp_path, OUTPUTS))
    for net, channels in (("ir", 1), ("vis", 3)):
        assert len(metrics[f"{net}/val_absrel_history"]) == 2
        assert metrics[f"{net}/val_absrel_first"] > 0 and metrics[f"{net}/val_absrel_last"] > 0
        assert metrics[f"{net}/absrel_improvement"] == pytest.approx(
            1 - metrics[f"{net}/val_absrel_last"] / metrics[f"{net}/val_absrel_first"])
        est = load_depth_estimator(tmp_path / f"depth_{net}")
        y = est(torch.rand(1, channels, 48, 64))
        assert y.shape == (1, 1, 48, 64) and (y > 0).all()
        from fusionlab.data.io import read_image

        panel, _ = read_image(tmp_path / f"val_{net}.png")
        assert panel.shape[:2] == (2 * 48, 4 * 64)  # 2 rows; input | prediction | GT | error
    json.dumps(metrics)  # manifest-ready


def test_depth_stage_without_depth_ground_truth_is_a_clear_error(tmp_path, tiny_dataset):
    import shutil

    from fusionlab.errors import DataError
    from fusionlab.stages.depth import OUTPUTS, run

    root = tmp_path / "nodepth"
    shutil.copytree(tiny_dataset, root)
    shutil.rmtree(root / "depth")
    with pytest.raises(DataError, match="depth ground truth"):
        run(depth_config(root, max_epochs=1), _ctx("depth", tmp_path / "out", OUTPUTS))


def test_denoiser_stage_writes_pipeline_folder_and_samples(tmp_path, tiny_dataset):
    from fusionlab.data.io import read_image
    from fusionlab.models.denoiser import DiffusionFeatureExtractor, load_denoiser
    from fusionlab.stages.denoiser import OUTPUTS, run

    metrics = run(denoiser_config(tiny_dataset), _ctx("denoiser", tmp_path, OUTPUTS))
    assert len(metrics["val_eps_mse_history"]) == 2
    assert metrics["val_eps_mse_first"] > 0 and metrics["val_eps_mse_last"] > 0
    unet, sched = load_denoiser(tmp_path / "denoiser")
    assert sched.config.num_train_timesteps == 50
    feats = DiffusionFeatureExtractor(unet, sched, timesteps=(10,), blocks=(0, 1))(torch.rand(1, 1, 48, 64),
                                                                                   torch.rand(1, 3, 48, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 48, 64), (1, 8, 48, 64)]
    grid, _ = read_image(tmp_path / "samples.png")
    assert grid.ndim == 3 and grid.shape[1] > grid.shape[0]  # 2 tiles of IR|RGB side by side


def test_denoiser_stage_resumes_after_a_crash_and_keeps_its_history(tmp_path, tiny_dataset, monkeypatch):
    from fusionlab.stages import denoiser
    from fusionlab.stages.denoiser import OUTPUTS, run

    def crash(module):  # the process dies when the second epoch starts
        if module.current_epoch == 1:
            raise RuntimeError("simulated crash")

    ctx = _ctx("denoiser", tmp_path, OUTPUTS)
    monkeypatch.setattr(denoiser.DenoiserModule, "on_train_epoch_start", crash, raising=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(denoiser_config(tiny_dataset), ctx)
    assert (tmp_path / "checkpoints" / "main" / "last.ckpt").is_file()
    assert not (tmp_path / "denoiser").exists()
    monkeypatch.undo()
    epochs = []
    monkeypatch.setattr(denoiser.DenoiserModule, "on_train_epoch_start",
                        lambda module: epochs.append(module.current_epoch), raising=False)
    resumed = run(denoiser_config(tiny_dataset), ctx)
    assert epochs == [1]  # continued with the second epoch, did not restart
    assert len(resumed["val_eps_mse_history"]) == 2  # the first epoch's value came from the checkpoint
    assert (tmp_path / "denoiser" / "model_index.json").is_file()


@pytest.mark.parametrize("stage", ["depth", "denoiser"])
def test_bf16_mixed_step_on_cpu(tmp_path, tiny_dataset, stage):
    import importlib

    module = importlib.import_module(f"fusionlab.stages.{stage}")
    make = depth_config if stage == "depth" else denoiser_config
    cfg = make(tiny_dataset, precision="bf16-mixed", max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    metrics = module.run(cfg, _ctx(stage, tmp_path, module.OUTPUTS))
    values = [v for k, v in metrics.items() if k.endswith("_last")]
    assert values and all(v == v and v > 0 for v in values)  # finite (not NaN) and positive


def test_sample_command_writes_a_grid(tmp_path):
    from fusionlab.cli import main
    from fusionlab.data.io import read_image
    from fusionlab.models.denoiser import build_scheduler, build_unet, save_denoiser

    save_denoiser(tmp_path / "denoiser", build_unet(block_out_channels=[8, 16], norm_num_groups=4),
                  build_scheduler(num_train_timesteps=20))
    rc = main(["sample", "--denoiser", str(tmp_path / "denoiser"), "--n", "3", "--steps", "2",
               "--size", "24x16", "--columns", "3", "--out", str(tmp_path / "grid.png")])
    assert rc == 0
    grid, _ = read_image(tmp_path / "grid.png")
    assert grid.shape == (16 + 4, 3 * 48 + 4 * 2, 3)
    assert main(["sample", "--denoiser", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 2
