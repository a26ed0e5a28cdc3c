"""The YOLO detector of stage 5 and of the detection protocol: ultralytics model, loss and NMS.

ultralytics supplies the network (`DetectionModel` built from one of its YAMLs), the training
loss (`v8DetectionLoss`) and post-processing (NMS). This module only adds what fusionlab needs
around them:

* `prepare_ultralytics(run_dir)`: offline and no-home hygiene. Call it before the first
  `import ultralytics` (everything here calls it for you): settings, runs and the plotting font
  stay inside the run dir and nothing is fetched from the network.
* `DetectorConfig` / `build_detector`: a YAML + our own width/depth multiples, so a CPU demo can
  use a much narrower net than yolov8n; or weights from `pretrained`.
* `DetectionCriterion`: the data layer's boxes `[N,6] (batch_index, class, cx, cy, w, h)` ->
  ultralytics' `{batch_idx, cls, bboxes}`; returns the loss per image.
* `predict`: inference + NMS -> per-image `[n,6] (x1, y1, x2, y2, conf, class)` in pixels.
* `save_detector` / `load_detector`: our artifacts are safetensors + `config.json`.

Weights safety: detectors are safetensors (never unpickled). A user's ultralytics `.pt` (a pickle)
is refused at run time; `fusionlab weights import X.pt --trust` converts it once into a detector
folder (fusionlab.models.yolo_import), whose matching tensors `pretrained` then loads.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from fusionlab.artifacts import plain
from fusionlab.config import Section
from fusionlab.errors import ConfigError

# --------------------------------------------------------------------------- hygiene


def prepare_ultralytics(run_dir: str | os.PathLike) -> Path:
    """Keep ultralytics offline and inside `run_dir`; call before the first `import ultralytics`.

    ultralytics reads YOLO_CONFIG_DIR once, at import time, to place settings.json and fonts
    (the default is the user's home), and downloads Arial.ttf when it first plots. We point the
    config dir into the run dir, copy matplotlib's DejaVuSans there under the names ultralytics
    asks for, set YOLO_OFFLINE, and turn off its analytics sync. If ultralytics was already
    imported in this process, its first config dir stays in use; the font is copied there too.
    Returns the ultralytics config folder in use.
    """
    import sys

    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = str(Path(run_dir).resolve() / "ultralytics")
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR  # noqa: E402 (after the env is set)

    _install_font(Path(USER_CONFIG_DIR))
    runs = Path(run_dir).resolve() / "ultralytics" / "runs"
    wanted = {"sync": False, "runs_dir": str(runs), "weights_dir": str(runs / "weights"),
              "datasets_dir": str(runs / "datasets"),
              # no experiment-tracker callbacks inside ultralytics' trainer (mlflow would write ./mlruns)
              **{k: False for k in ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")}}
    if any(SETTINGS.get(k) != v for k, v in wanted.items()):
        SETTINGS.update(wanted)
    return Path(USER_CONFIG_DIR)


def _install_font(config_dir: Path) -> None:
    import matplotlib

    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (config_dir / name).exists() and src.is_file():
            shutil.copyfile(src, config_dir / name)


# --------------------------------------------------------------------------- config + build


class DetectorConfig(Section):
    """Which YOLO, how wide, and post-processing thresholds."""

    cfg: str = "yolov8n.yaml"  # any ultralytics detection YAML name (yolov8n/s.yaml, yolov5n.yaml, ...) or a path
    width_multiple: float | None = Field(0.125, gt=0)  # None: the YAML's own scale
    depth_multiple: float | None = Field(0.33, gt=0)
    max_channels: int = Field(1024, gt=0)
    pretrained: str | None = None  # a fusionlab `detector/` folder, or a release imported by `fusionlab weights import`
    imgsz: int = Field(160, gt=0)  # nominal size; images are padded to a multiple of the stride
    conf: float = Field(0.001, ge=0, le=1)  # NMS confidence threshold used for mAP
    iou: float = Field(0.6, gt=0, le=1)  # NMS IoU threshold
    max_det: int = Field(100, gt=0)
    loss_reduction: Literal["mean", "sum"] = "mean"  # "mean": per image; "sum": ultralytics' × batch size


def model_dict(cfg: DetectorConfig) -> dict:
    """The ultralytics model dictionary for `cfg`, with our width/depth multiples applied."""
    prepare_ultralytics_default()
    from ultralytics.nn.tasks import yaml_model_load

    try:
        d = yaml_model_load(cfg.cfg)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise ConfigError(
            f"detector.cfg: '{cfg.cfg}' is not an ultralytics model YAML ({exc}); use e.g. yolov8n.yaml, "
            "yolov8s.yaml, yolov5n.yaml or a path to a YAML file"
        ) from None
    d = dict(d)
    if cfg.width_multiple is not None or cfg.depth_multiple is not None:
        base = (d.get("scales") or {}).get(d.get("scale") or "", [1.0, 1.0, cfg.max_channels])
        depth = cfg.depth_multiple if cfg.depth_multiple is not None else base[0]
        width = cfg.width_multiple if cfg.width_multiple is not None else base[1]
        d["scales"] = {"custom": [depth, width, cfg.max_channels]}
        d["scale"] = "custom"
    d.pop("yaml_file", None)
    return d


def prepare_ultralytics_default() -> None:
    """Hygiene for library use without an explicit run dir: the current working directory."""
    import sys

    if "ultralytics" not in sys.modules or os.environ.get("YOLO_OFFLINE") != "1":
        prepare_ultralytics(os.environ.get("FUSIONLAB_RUN_DIR", Path.cwd() / "runs"))


def build_detector(cfg: DetectorConfig, nc: int, names: list[str] | None = None, key: str = "detector.pretrained"):
    """A fresh `DetectionModel` for `nc` classes; weights from `cfg.pretrained` when given."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from fusionlab import weights
    from fusionlab.models.yolo_import import is_imported, load_matching, refuse_pickle

    path = weights.ultralytics_source(cfg.pretrained).resolve(what="YOLO detector", key=key) if cfg.pretrained else None
    refuse_pickle(path, key)
    if path is not None and not is_imported(path):
        return load_detector(path)
    d = model_dict(cfg)
    model = DetectionModel(d, ch=3, nc=nc, verbose=False)
    model.args = get_cfg()
    model.names = {i: n for i, n in enumerate(names or [str(i) for i in range(nc)])}
    if path is not None:
        load_matching(model, path, key)
    return model


def detector_config_dict(model, cfg: DetectorConfig) -> dict:
    """Everything `load_detector` needs: the resolved model dict, classes and thresholds."""
    return {"model": model.yaml, "nc": int(model.model[-1].nc), "names": [model.names[i] for i in sorted(model.names)],
            "detector": cfg.model_dump()}


def save_detector(path: str | os.PathLike, model, cfg: DetectorConfig) -> Path:
    """Write `detector/`: model.safetensors + config.json (the resolved ultralytics model dict, classes, thresholds)."""
    from fusionlab.artifacts import save_model

    return save_model(path, model, plain(detector_config_dict(model, cfg)))


def load_detector(path: str | os.PathLike):
    """Rebuild a detector saved by `save_detector` (safetensors; nothing unpickled)."""
    prepare_ultralytics_default()
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from fusionlab.artifacts import load_model_files, load_state

    config, state = load_model_files(path, what="YOLO detector", required=("model", "nc", "names"))
    model = DetectionModel(config["model"], ch=3, nc=config["nc"], verbose=False)
    load_state(model, state, path, "YOLO detector")
    model.args = get_cfg()
    model.names = dict(enumerate(config["names"]))
    return model


# --------------------------------------------------------------------------- loss


def to_ultralytics_batch(boxes: torch.Tensor) -> dict:
    """Data-layer boxes [N,6] (batch_index, class, cx, cy, w, h) -> ultralytics' target dict."""
    boxes = boxes.reshape(-1, 6).float()
    return {"batch_idx": boxes[:, 0], "cls": boxes[:, 1:2], "bboxes": boxes[:, 2:6]}


class DetectionCriterion:
    """`v8DetectionLoss` bound to a model, built lazily on the model's current device.

    `__call__(preds, boxes) -> (loss, items)`: loss is a scalar (per image by default) that
    keeps the graph (second-order gradients included); items are (box, cls, dfl), detached.
    """

    def __init__(self, model, reduction: str = "mean"):
        self.model, self.reduction = model, reduction
        self._loss = None

    def _criterion(self):
        device = next(self.model.parameters()).device
        if self._loss is None or self._loss.device != device:
            from ultralytics.cfg import get_cfg
            from ultralytics.utils.loss import v8DetectionLoss

            if not hasattr(self.model, "args") or not hasattr(self.model.args, "box"):
                self.model.args = get_cfg()
            self._loss = v8DetectionLoss(self.model)
        return self._loss

    def __call__(self, preds, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        criterion = self._criterion()
        batch = {k: v.to(criterion.device) for k, v in to_ultralytics_batch(boxes).items()}
        preds = criterion.parse_output(preds)
        preds = {k: ([f.float() for f in v] if isinstance(v, list) else v.float()) for k, v in preds.items()}
        vec, _ = criterion.loss(preds, batch)  # [3] = (box, cls, dfl) gains × batch size
        bs = preds["boxes"].shape[0]
        loss = vec.sum() if self.reduction == "sum" else vec.sum() / bs
        return loss, (vec.detach() / bs)


# --------------------------------------------------------------------------- inference


def pad_to_stride(images: torch.Tensor, stride: int = 32) -> torch.Tensor:
    """Pad right/bottom with gray so H and W are multiples of the detector's largest stride."""
    from fusionlab.models.padding import pad_multiple

    return pad_multiple(images, stride, value=0.5)[0]


def as_three_channels(images: torch.Tensor) -> torch.Tensor:
    """A 1-channel image (IR) is repeated to 3 channels, so every image set uses the same detector."""
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


@torch.no_grad()
def predict(model, images: torch.Tensor, cfg: DetectorConfig | None = None) -> list[torch.Tensor]:
    """Inference + NMS: per image [n,6] (x1, y1, x2, y2, conf, class) in pixels of `images`."""
    from ultralytics.utils.nms import non_max_suppression

    cfg = cfg or DetectorConfig()
    was_training = model.training
    model.eval()
    try:
        out = model(pad_to_stride(as_three_channels(images), int(model.stride.max())))
    finally:
        model.train(was_training)
    out = out[0] if isinstance(out, (list, tuple)) else out
    dets = non_max_suppression(out.float(), conf_thres=cfg.conf, iou_thres=cfg.iou, max_det=cfg.max_det,
                               nc=int(model.model[-1].nc))
    h, w = images.shape[-2:]
    for d in dets:  # boxes can reach into the padding: clip to the image
        d[:, [0, 2]] = d[:, [0, 2]].clamp(0, w)
        d[:, [1, 3]] = d[:, [1, 3]].clamp(0, h)
    return dets
