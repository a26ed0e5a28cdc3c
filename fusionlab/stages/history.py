"""Per-epoch history of logged metrics, kept inside Lightning checkpoints.

Stages report how training went (first and last epoch's loss or validation error). A plain list
on the module or on a callback is lost when a killed run resumes from `last.ckpt`, so a resumed
run would report the first epoch after the crash as its first. `EpochHistory` is a stateful
callback: Lightning saves its `state_dict` in every checkpoint and restores it on resume.
"""

from __future__ import annotations

import lightning as L


class EpochHistory(L.Callback):
    """Values of `trainer.callback_metrics` whose key starts with `prefix`, once per epoch.

    `on="train"` records at the end of each training epoch (epoch-aggregated training logs),
    `on="validation"` at the end of each validation run (not the sanity check); both happen
    before the epoch's checkpoint is written. Step-level
    entries (`*_step`) are skipped. `name` keeps two histories in one checkpoint apart.
    """

    def __init__(self, prefix: str = "", on: str = "train", name: str = "main"):
        if on not in ("train", "validation"):
            raise ValueError(f"EpochHistory: on must be 'train' or 'validation', got {on!r}")
        self.prefix, self.on, self.name = prefix, on, name
        self.rows: list[dict] = []  # one per epoch: {"epoch": e, key: value, ...}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, on=self.on)

    def _record(self, trainer) -> None:
        values = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items()
                  if k.startswith(self.prefix) and not k.endswith("_step") and v.numel() == 1}
        epoch = int(trainer.current_epoch)
        self.rows = [r for r in self.rows if r["epoch"] != epoch] + [{"epoch": epoch, **values}]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.on == "train":
            self._record(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        # not on_validation_epoch_end: callbacks run before the module's hook, which may still log
        if self.on == "validation" and not trainer.sanity_checking:
            self._record(trainer)

    def series(self, key: str) -> list[float]:
        """The values of `key` over the recorded epochs (epochs that lack it are skipped)."""
        return [r[key] for r in self.rows if key in r]

    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]
