"""The weights resolver: local path > cache > hub, and one clear error when offline."""

from __future__ import annotations

import pytest

from fusionlab import weights
from fusionlab.errors import WeightsMissingError


def test_none_means_random_init():
    assert weights.resolve(None, what="depth net") is None


def test_local_path_then_cache_then_offline_error(tmp_path, monkeypatch):
    local = tmp_path / "my-weights"
    local.mkdir()
    assert weights.resolve(str(local), what="x") == str(local)

    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "cache" / "Intel--dpt-hybrid-midas").mkdir(parents=True)
    assert weights.resolve("Intel/dpt-hybrid-midas", what="x").endswith("Intel--dpt-hybrid-midas")

    with pytest.raises(WeightsMissingError) as err:
        weights.resolve("LiheYoung/depth-anything-small-hf", what="stage 1 depth net", key="model.pretrained")
    msg = str(err.value)
    assert "stage 1 depth net" in msg and "model.pretrained" in msg and "LiheYoung/depth-anything-small-hf" in msg
    assert "null" in msg and "huggingface-cli download" in msg


def test_online_returns_hub_id(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FUSIONLAB_OFFLINE", "YOLO_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert weights.resolve("org/model", what="x") == "org/model"


def test_missing_local_path_is_an_error_even_online(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        weights.resolve(str(tmp_path / "nope.safetensors").replace(str(tmp_path), "./nope"), what="x")


def test_loading_turns_download_failures_into_the_clear_error():
    with pytest.raises(WeightsMissingError, match="could not load pretrained weights 'org/m'.*config key 'clip.pretrained'"):
        with weights.loading("CLIP", "clip.pretrained", "org/m"):
            raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")
    with pytest.raises(ZeroDivisionError):  # unrelated errors pass through untouched
        with weights.loading("CLIP", "clip.pretrained", "org/m"):
            raise ZeroDivisionError


def test_weights_list_cli(cli_inproc, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FUSIONLAB_WEIGHTS", str(tmp_path / "cache"))
    cfg = tmp_path / "s.yaml"
    cfg.write_text("stage: depth\nmodel: {pretrained: org/missing}\nclip: {pretrained: null}\n")
    proc = cli_inproc("weights", "list", str(cfg), check=False)
    assert proc.returncode == 1
    assert "model.pretrained" in proc.stdout and "MISSING" in proc.stdout and "random init" in proc.stdout
