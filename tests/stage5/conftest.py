"""Stage-5 fixtures: tiny synthetic data, a tiny fusion net, a tiny YOLO and a socket guard."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(scope="session", autouse=True)
def ultralytics_home(tmp_path_factory):
    """Offline hygiene before anything imports ultralytics: settings and font in a temp dir."""
    from fusionlab.models.detector import prepare_ultralytics

    return prepare_ultralytics(tmp_path_factory.mktemp("yolo-run"))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """8 synthetic 64x64 scenes with boxes (the generator's on-disk layout)."""
    from fusionlab.data.synth import generate

    return generate(tmp_path_factory.mktemp("scenes") / "ds", n=8, seed=0, size=(64, 64))


@pytest.fixture(scope="session")
def tiny_fusion(tmp_path_factory):
    """A saved stage-4-style fusion checkpoint (the tiny `baseline` net)."""
    from fusionlab.models.fusion import build_fusion_model, save_fusion_model

    net = build_fusion_model({"name": "baseline", "width": 4, "depth": 1})
    return save_fusion_model(tmp_path_factory.mktemp("fusion") / "fusion", net)


@pytest.fixture
def tiny_detector_cfg():
    from fusionlab.models.detector import DetectorConfig

    return DetectorConfig(cfg="yolov8n.yaml", width_multiple=0.0625, depth_multiple=0.33, imgsz=64)


@pytest.fixture
def socket_guard(monkeypatch):
    """Fail (and record) any outbound network connection; local unix sockets stay allowed."""
    attempts: list = []

    def refuse(address):
        attempts.append(address)
        raise ConnectionRefusedError(f"socket guard: outbound connection to {address!r} attempted")

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        refuse(address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return attempts
