"""The stage contract and the context a stage runs in.

A stage module defines:

    class Config(StageConfig): ...        # its typed config (stage YAML under stages/)
    OUTPUTS = ("depth_ir", "depth_vis")   # artifact names written under ctx.out_dir
    HEADLINE = ("ir/val_absrel", ...)     # metrics shown in the run summary
    def run(cfg: Config, ctx: StageContext) -> dict: ...   # trains, writes OUTPUTS, returns metrics

`StageContext` gives it the output folder, Lightning trainers with CSV and W&B logging and
resumable checkpoints, and rank information, so stage code stays about the method.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fusionlab.config import Section, operational
from fusionlab.errors import ConfigError

CHECKPOINTS = "checkpoints"


class TrainerConfig(Section):
    """Lightning Trainer settings. Devices and precision live here, per stage."""

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_epochs: int = 1
    max_steps: int = -1
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = operational(10)
    checkpoint_every_n_steps: int | None = operational(None)  # None: a resumable checkpoint every epoch
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    deterministic: bool | Literal["warn"] = False
    enable_progress_bar: bool = operational(True)


class StageConfig(Section):
    """Fields every stage config has."""

    stage: str
    seed: int = 0
    trainer: TrainerConfig = TrainerConfig()
    # torch intra-op threads when the stage runs on the CPU (None: torch's choice, one per core).
    # On a CPU shared with other jobs, 1 is often several times faster for these small nets:
    # extra OpenMP threads spin-wait whenever another process holds a core. Ignored on a GPU.
    cpu_threads: int | None = operational(None, gt=0)


def accelerator_device(accelerator: str):
    """The torch device a Lightning `accelerator` setting means, for work outside the Trainer."""
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def apply_cpu_threads(cfg: StageConfig) -> None:
    """Set torch's CPU threads from `cfg.cpu_threads` when the stage will run on the CPU."""
    import torch

    if cfg.cpu_threads is not None and accelerator_device(cfg.trainer.accelerator).type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)


class WandbSettings(Section):
    """Weights & Biases logging for a pipeline run (not part of any stage's key)."""

    enabled: bool = True
    project: str = "fusionlab"
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"


def load_stage_module(stage_type: str, source: str = "config"):
    """Import the module implementing `stage_type` (a registry name or a dotted module path)."""
    from fusionlab.stages import STAGE_TYPES

    module_name = STAGE_TYPES.get(stage_type, stage_type)
    if stage_type not in STAGE_TYPES and "." not in stage_type:
        import difflib

        hint = difflib.get_close_matches(stage_type, list(STAGE_TYPES), n=1)
        raise ConfigError(
            f"{source}: unknown stage type 'stage: {stage_type}'"
            + (f": did you mean '{hint[0]}'?" if hint else f"; known types: {', '.join(STAGE_TYPES)}")
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"{source}: stage module '{module_name}' cannot be imported ({exc})") from None
        raise
    for attr in ("Config", "OUTPUTS", "run"):
        if not hasattr(module, attr):
            raise ConfigError(f"{source}: stage module '{module_name}' does not define '{attr}'")
    return module


def process_is_rank_zero() -> bool:
    """True in the process that owns artifacts, also before a Trainer exists (torchrun, SLURM, Lightning)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(var)
        if value not in (None, "", "0"):
            return False
    return True


def wandb_mode(settings: WandbSettings) -> str:
    """`auto` is online when a W&B key is configured, offline otherwise."""
    if not settings.enabled or settings.mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        return "disabled"
    if settings.mode != "auto":
        return settings.mode
    if os.environ.get("WANDB_MODE") in ("online", "offline"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file() and \
        "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore")
    return "online" if has_key else "offline"


@dataclass
class StageContext:
    """Where and how a stage runs. Built by `fusionlab stage`; stage code only reads it.

    `out_dir` is where this attempt writes (the staging folder); `final_dir` is where its outputs
    land once it has succeeded (`<run_dir>/<stage>`), for records that must outlive the attempt.
    """

    name: str
    out_dir: Path
    final_dir: Path | None = None
    key: str = ""
    run_dir: Path | None = None
    outputs: tuple[str, ...] = ()
    wandb: WandbSettings = field(default_factory=WandbSettings)
    group: str | None = None
    upstream: dict[str, dict] = field(default_factory=dict)  # name -> upstream manifest
    devices: dict[str, Any] = field(default_factory=dict)    # filled from the first trainer
    _wandb_run: Any = None

    # ---------------------------------------------------------------- paths

    def output(self, name: str) -> Path:
        """Path of declared output `name` (a file or folder under out_dir)."""
        if self.outputs and name.split("/")[0] not in self.outputs:
            raise ValueError(f"stage '{self.name}' declares outputs {self.outputs}, not '{name}'")
        return self.out_dir / name

    def checkpoint_dir(self, name: str = "main") -> Path:
        return self.out_dir / CHECKPOINTS / name

    def resume_path(self, name: str = "main") -> Path | None:
        last = self.checkpoint_dir(name) / "last.ckpt"
        return last if last.is_file() else None

    # ---------------------------------------------------------------- ranks

    @property
    def is_global_zero(self) -> bool:
        try:
            from lightning.fabric.utilities.rank_zero import rank_zero_only

            return getattr(rank_zero_only, "rank", 0) == 0 and process_is_rank_zero_after_launch()
        except ImportError:  # pragma: no cover
            return process_is_rank_zero()

    # ---------------------------------------------------------------- logging

    def wandb_run(self):
        """The stage's single W&B run (lazily created, rank 0 only), or None when disabled."""
        mode = wandb_mode(self.wandb)
        if mode == "disabled" or not self.is_global_zero:
            return None
        if self._wandb_run is None:
            import wandb

            self._wandb_run = wandb.init(
                project=self.wandb.project,
                entity=self.wandb.entity,
                group=self.group,
                name=self.name,
                job_type=self.name,
                mode=mode,
                dir=str(self.out_dir),
                reinit="create_new",
                settings=wandb.Settings(silent=True, x_disable_stats=True),
            )
        return self._wandb_run

    def loggers(self, name: str = "main") -> list:
        from lightning.pytorch.loggers import CSVLogger, WandbLogger

        loggers: list = [CSVLogger(save_dir=str(self.out_dir / "logs"), name=name, version="")]
        run = self.wandb_run()
        if run is not None:
            loggers.append(WandbLogger(experiment=run, prefix=name if name != "main" else ""))
        return loggers

    # ---------------------------------------------------------------- training

    def make_trainer(self, cfg: TrainerConfig, *, name: str = "main", callbacks: list | None = None, **overrides):
        """A Lightning Trainer for training phase `name` with loggers and resumable checkpoints.

        `overrides` replace TrainerConfig fields or pass extra Trainer arguments.
        """
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar

        opts = cfg.model_dump()
        every = opts.pop("checkpoint_every_n_steps")
        opts.update(overrides)
        ckpt = ModelCheckpoint(
            dirpath=str(self.checkpoint_dir(name)),
            save_last=True,
            save_top_k=1,  # Lightning >= 2.6 writes last.ckpt only when a top-k checkpoint was saved
            every_n_train_steps=every,
            save_on_train_epoch_end=True,
        )
        extra = []
        if opts.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks or []):
            # tqdm rather than rich: it also reports progress when the output is a pipe or a log file.
            extra.append(TQDMProgressBar(refresh_rate=max(1, int(opts.get("log_every_n_steps") or 1))))
        trainer = L.Trainer(
            default_root_dir=str(self.out_dir),
            logger=self.loggers(name),
            callbacks=[ckpt, *extra, *(callbacks or [])],
            num_sanity_val_steps=0,
            **{k: v for k, v in opts.items() if v is not None},
        )
        if not self.devices:
            self.devices = {
                "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
                "devices": trainer.num_devices,
                "num_nodes": trainer.num_nodes,
                "world_size": trainer.world_size,
                "strategy": type(trainer.strategy).__name__,
                "precision": str(trainer.precision),
            }
        return trainer

    def fit(self, trainer, module, datamodule=None, *, name: str = "main", **kwargs) -> None:
        """`trainer.fit`, resuming from this phase's last checkpoint when one exists."""
        ckpt_path = self.resume_path(name)
        if ckpt_path is not None and trainer.is_global_zero:
            print(f"resuming phase '{name}' from {ckpt_path}", flush=True)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True, **kwargs)


def process_is_rank_zero_after_launch() -> bool:
    """LOCAL_RANK/NODE_RANK stay meaningful after Lightning's launcher sets them."""
    return os.environ.get("LOCAL_RANK", "0") in ("", "0") and os.environ.get("NODE_RANK", "0") in ("", "0")
