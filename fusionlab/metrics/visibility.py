"""Which modality sees each object, and how many of each kind a detector finds.

Objects fall into groups by their ground-truth `visible_in` (synthetic scenes record it):
`ir_only`, `vis_only`, `both`, and `neither`; where a dataset does not record it the object's
group is unknown and only the `all` row is reported. Fusion is supposed to keep what only one
modality sees, so the `ir_only` and `vis_only` rows are where it shows.

`split_recall` is the detection side (the contrast side is `fusionlab.metrics.retention`): of the
objects only IR sees, how many does a detector find, and likewise for the other groups.
Definitions: docs/metrics.md, "Visibility-split recall".
"""

from __future__ import annotations

import torch

from fusionlab.errors import DataError

GROUPS = ("all", "ir_only", "vis_only", "both")  # the rows reported; `neither` counts in `all` only
IOU_THRESHOLD = 0.5
CONF_THRESHOLD = 0.25  # ultralytics' default `conf` for prediction: what a deployed detector reports


def group_of(seen: dict | None) -> str | None:
    """`ir_only` | `vis_only` | `both` | `neither` from `{"ir": bool, "vi": bool}`; None when unknown."""
    if seen is None:
        return None
    ir, vi = bool(seen["ir"]), bool(seen["vi"])
    return "both" if ir and vi else "ir_only" if ir else "vis_only" if vi else "neither"


def match_targets(pred: torch.Tensor, target: torch.Tensor, iou_threshold: float = IOU_THRESHOLD) -> torch.Tensor:
    """Boolean [M]: is each target found? Predictions claim targets greedily in descending score,
    each the unclaimed same-class target of highest IoU >= `iou_threshold` (the rule of
    `fusionlab.metrics.detection.match_detections` at one threshold, seen from the targets)."""
    from ultralytics.utils.metrics import box_iou

    found = torch.zeros(target.shape[0], dtype=torch.bool)
    if pred.shape[0] == 0 or target.shape[0] == 0:
        return found
    order = torch.argsort(pred[:, 4], descending=True)
    iou = box_iou(target[:, 1:5].double(), pred[order, :4].double())  # [M, N]
    iou = iou * (target[:, :1] == pred[order, 5][None]).double()  # other classes never match
    for j in range(order.shape[0]):
        available = torch.where(found, 0.0, iou[:, j])
        best, k = available.max(0)
        if best >= iou_threshold:
            found[k] = True
    return found


def split_recall(predictions, targets, visibility, *, conf: float = CONF_THRESHOLD,
                 iou_threshold: float = IOU_THRESHOLD) -> dict[str, dict]:
    """Recall per visibility group over a set of images.

    predictions: per image [N, 6] (x1, y1, x2, y2, score, class), e.g. ultralytics' NMS output;
    targets: per image [M, 5] (class, x1, y1, x2, y2) in the same units;
    visibility: per image a list of M `{"ir", "vi"}` dicts (label-row order), or None when unknown.
    Predictions below `conf` are dropped first. Returns {group: {"recall", "found", "n"}} for
    `all` and, when any image has visibility, `ir_only`, `vis_only` and `both` (recall is NaN
    for a group with no objects).
    """
    if not (len(predictions) == len(targets) == len(visibility)):
        raise DataError(f"got predictions for {len(predictions)} images, targets for {len(targets)} and "
                        f"visibility for {len(visibility)}; they must pair up")
    found_in: dict[str, int] = dict.fromkeys(GROUPS, 0)
    n_in: dict[str, int] = dict.fromkeys(GROUPS, 0)
    known = False
    for i, (pred, target, seen) in enumerate(zip(predictions, targets, visibility, strict=True)):
        pred = torch.as_tensor(pred).detach().cpu().double().reshape(-1, 6)
        target = torch.as_tensor(target).detach().cpu().double().reshape(-1, 5)
        if seen is not None and len(seen) != target.shape[0]:
            raise DataError(f"image {i} has {target.shape[0]} targets but visibility for {len(seen)} objects")
        found = match_targets(pred[pred[:, 4] >= conf], target, iou_threshold)
        known |= seen is not None
        for k in range(target.shape[0]):
            for group in ("all", group_of(seen[k]) if seen is not None else None):
                if group in n_in:
                    n_in[group] += 1
                    found_in[group] += int(found[k])
    groups = GROUPS if known else ("all",)
    return {g: {"recall": found_in[g] / n_in[g] if n_in[g] else float("nan"), "found": found_in[g], "n": n_in[g]}
            for g in groups}
