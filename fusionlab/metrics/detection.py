"""Detection metrics (mAP@0.5, mAP@0.5:0.95, precision, recall, per-class AP) via ultralytics.

Format (one entry per image, all boxes in the SAME units, pixels or normalised):
- predictions: tensor [N, 6] = (x1, y1, x2, y2, score, class), what ultralytics' NMS returns
- targets:     tensor [M, 5] = (class, x1, y1, x2, y2)
`yolo_to_xyxy` turns fusionlab's YOLO boxes (class, cx, cy, w, h) into the target format.

Matching is ultralytics' own: `BaseValidator.match_predictions` (predictions in descending score
order, each IoU threshold 0.50:0.05:0.95, same class only), and AP, precision and recall come from
`ultralytics.utils.metrics.ap_per_class` (101-point interpolated AP; P and R at the confidence of
maximal mean F1). The detection protocol itself never uses this class: it scores with
ultralytics' `DetectionValidator` (`fusionlab.detection.protocol`). This one is for predictions
you already have (e.g. from another tool), in the format below.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from fusionlab.errors import DataError

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)


def yolo_to_xyxy(boxes: torch.Tensor, width: float = 1.0, height: float = 1.0) -> torch.Tensor:
    """(class, cx, cy, w, h) normalised -> (class, x1, y1, x2, y2) scaled by width/height."""
    cls, cx, cy, w, h = boxes.double().unbind(-1)
    return torch.stack(
        [cls, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1
    )


def match_detections(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Boolean [N, 10]: is each prediction a true positive at each IoU threshold (ultralytics' matcher)?"""
    from types import SimpleNamespace

    from fusionlab.models.detector import prepare_ultralytics_default

    prepare_ultralytics_default()
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import box_iou

    n = pred.shape[0]
    if n == 0 or target.shape[0] == 0:
        return torch.zeros(n, len(IOU_THRESHOLDS), dtype=torch.bool)
    order = torch.argsort(pred[:, 4], descending=True)  # the matcher expects descending confidence
    iou = box_iou(target[:, 1:5].double(), pred[order, :4].double())  # [M, N]
    matched = BaseValidator.match_predictions(SimpleNamespace(iouv=IOU_THRESHOLDS), pred[order, 5], target[:, 0], iou)
    correct = torch.zeros(n, len(IOU_THRESHOLDS), dtype=torch.bool)
    correct[order] = matched.bool()
    return correct


def _check(pred: torch.Tensor, target: torch.Tensor, i: int) -> None:
    if pred.ndim != 2 or pred.shape[1] != 6:
        raise DataError(
            f"predictions of image {i} have shape {tuple(pred.shape)}; expected [N, 6] (x1,y1,x2,y2,score,class)"
        )
    if target.ndim != 2 or target.shape[1] != 5:
        raise DataError(f"targets of image {i} have shape {tuple(target.shape)}; expected [M, 5] (class,x1,y1,x2,y2)")


class DetectionMetrics(Metric):
    """Accumulates matches over images (DDP: states are concatenated) and computes mAP & co.

    update(predictions, targets) with lists as described in the module docstring;
    compute() -> {"mAP50", "mAP50-95", "precision", "recall", "AP50/<class>", "AP50-95/<class>"}.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, class_names: list[str] | dict[int, str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(class_names, (list, tuple)):
            class_names = dict(enumerate(class_names))
        self.class_names = class_names or {}
        self.add_state("tp", default=[], dist_reduce_fx="cat")
        self.add_state("conf", default=[], dist_reduce_fx="cat")
        self.add_state("pred_cls", default=[], dist_reduce_fx="cat")
        self.add_state("target_cls", default=[], dist_reduce_fx="cat")

    def update(self, predictions, targets) -> None:
        if len(predictions) != len(targets):
            raise DataError(f"got predictions for {len(predictions)} images but targets for {len(targets)}")
        for i, (pred, target) in enumerate(zip(predictions, targets, strict=True)):
            pred, target = torch.as_tensor(pred).detach().cpu(), torch.as_tensor(target).detach().cpu()
            pred = pred.reshape(-1, 6) if pred.numel() == 0 else pred
            target = target.reshape(-1, 5) if target.numel() == 0 else target
            _check(pred, target, i)
            self.tp.append(match_detections(pred, target).to(self.device))
            self.conf.append(pred[:, 4].double().to(self.device))
            self.pred_cls.append(pred[:, 5].double().to(self.device))
            self.target_cls.append(target[:, 0].double().to(self.device))

    def compute(self) -> dict[str, float]:
        from ultralytics.utils.metrics import ap_per_class

        def cat(x, width=None):
            if isinstance(x, torch.Tensor):
                return x.cpu().numpy()
            if not x:
                return np.zeros((0, width) if width else (0,))
            return torch.cat(x).cpu().numpy()

        tp, conf = cat(self.tp, len(IOU_THRESHOLDS)), cat(self.conf)
        pred_cls, target_cls = cat(self.pred_cls), cat(self.target_cls)
        out = {"mAP50": 0.0, "mAP50-95": 0.0, "precision": 0.0, "recall": 0.0}
        if target_cls.size == 0 or tp.shape[0] == 0:
            return out  # nothing to find, or nothing predicted: no detection credit
        _, _, p, r, _, ap, classes = ap_per_class(tp.astype(bool), conf, pred_cls, target_cls)[:7]
        out.update(
            {
                "mAP50": float(ap[:, 0].mean()),
                "mAP50-95": float(ap.mean()),
                "precision": float(p.mean()),
                "recall": float(r.mean()),
            }
        )
        for i, c in enumerate(classes):
            name = self.class_names.get(int(c), str(int(c)))
            out[f"AP50/{name}"] = float(ap[i, 0])
            out[f"AP50-95/{name}"] = float(ap[i].mean())
        return out


def detection_metrics(predictions, targets, class_names=None) -> dict[str, float]:
    """One-shot helper: metrics of all images at once (see the module docstring for the format)."""
    metric = DetectionMetrics(class_names)
    metric.update(predictions, targets)
    return metric.compute()
