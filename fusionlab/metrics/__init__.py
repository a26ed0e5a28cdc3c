"""Evaluation metrics: image fusion (two conventions), monocular depth, and object detection.

Fusion: `compute_fusion_metrics` (one image triple, any size), `FusionMetrics` (batched,
torchmetrics, DDP-reducible), `MetricStats` (mean/std of any per-image values, DDP-reducible),
the `LOWER_IS_BETTER` set, and conventions `cddfuse` (default, matches the published Python
evaluator) and `matlab`. `evaluate`: the one evaluator of fused images (stage 4 and `fusionlab
eval`) and its table writer. See docs/metrics.md for every formula and pitfall.
Depth: `DepthMetrics`. Detection: `DetectionMetrics` / `detection_metrics`.

Attributes are loaded on first access, so `import fusionlab.metrics` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ALL_METRICS": "functional",
    "CONVENTIONS": "functional",
    "LOWER_IS_BETTER": "functional",
    "NO_REFERENCE": "functional",
    "fusion_metrics": "functional",
    "compute_fusion_metrics": "fusion",
    "batch_metric_values": "fusion",
    "FusionMetrics": "fusion",
    "MetricStats": "fusion",
    "Evaluator": "evaluate",
    "write_tables": "evaluate",
    "to_gray255": "gray",
    "read_gray255": "gray",
    "DepthMetrics": "depth",
    "DEPTH_METRICS": "depth",
    "DEPTH_LOWER_IS_BETTER": "depth",
    "DetectionMetrics": "detection",
    "detection_metrics": "detection",
    "yolo_to_xyxy": "detection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fusionlab.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fusionlab.metrics' has no attribute '{name}'")
