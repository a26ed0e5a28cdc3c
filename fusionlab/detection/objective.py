"""The lower level of stage 5: the fusion net's own stage-4 objective f + g (Text2Pixels eq. 7).

`lower_objective(net, stage4_config)` is the ONE place stage 5 gets its lower-level loss. It
returns a callable `objective(fused, batch, text) -> {"total": F, <terms>}` with a per-epoch hook
`on_epoch_start(epoch)` (text2pixels' z′) and `to(device)`. The terms are stage 4's own code, so
the operators are the same ones (one Sobel, `fusionlab.losses.gradient`, kornia normalized=False).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fusionlab.errors import PipelineError


def stage4_config(fusion_dir: str | Path, net=None) -> tuple[dict, str]:
    """The resolved stage-4 config that trained `fusion_dir`, and where it came from.

    A net refined by stage 5 records it in its own config.json (`stage4_config`); a stage-4
    `fusion/` folder has it in the stage's manifest.json beside the folder. Without either, the
    net's preset defaults are used (the returned source says so and the stage records it).
    """
    fusion_dir = Path(fusion_dir)
    recorded = getattr(net, "checkpoint_config", {}) if net is not None else {}
    if isinstance(recorded.get("stage4_config"), dict):
        return recorded["stage4_config"], f"{fusion_dir / 'config.json'} (stage4_config)"
    manifest = fusion_dir.parent / "manifest.json"
    if manifest.is_file():
        config = json.loads(manifest.read_text()).get("config") or {}
        if config.get("stage") == "fusion":
            return config, str(manifest)
    preset = recorded.get("preset") or (recorded.get("model") or {}).get("name") or getattr(net, "preset_name", None)
    if not preset:
        raise PipelineError(f"'{fusion_dir}': no stage-4 config (manifest.json beside it) and no preset name in its "
                            "config.json; pass the fusion/ folder a stage-4 run wrote")
    config = {"stage": "fusion", "preset": preset, "text_guidance": bool(recorded.get("text_guidance", False))}
    return config, f"preset '{preset}' defaults (no stage-4 manifest beside '{fusion_dir}')"


class LowerObjective:
    """The preset's stage-4 Objective (`fusionlab.presets.build_objective`) bound to `net`, with the
    epoch hook stage 5's loop calls."""

    def __init__(self, net, config: dict):
        from fusionlab.presets import build_objective

        self.net = net
        self.objective = build_objective(config, net)

    def __call__(self, fused: torch.Tensor, batch: dict, text: dict | None) -> dict[str, torch.Tensor]:
        return self.objective(fused, batch, text)

    def on_epoch_start(self, epoch: int) -> None:
        """Stage 4's epoch hook (text2pixels: z′ = a frozen copy of the net as the epoch starts).

        Stage 5 continues stage 4's training, so its epoch 0 is a later epoch of stage 4 and already
        has a z′: the stage-4 net itself."""
        self.objective.on_train_epoch_start(self.net, epoch + 1)

    def to(self, device) -> "LowerObjective":
        self.objective.to(device)  # the frozen helpers (depth nets, CLIP, VGG, z′)
        return self


def lower_objective(net, config: dict, data_root: str | None = None) -> LowerObjective:
    """f + g of eq. 7 for `net`: the objective its preset was trained with in stage 4.

    `config` is the stage-4 config (`stage4_config`); `data_root` fills its `data.root` when the
    config has none (the objective never reads data, stage 4's config only requires the key).
    """
    config = dict(config)
    config.setdefault("data", {"root": data_root or "."})
    return LowerObjective(net, config)
