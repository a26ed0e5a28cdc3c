"""Pipeline files: which stages run, from which stage YAML, with which overrides, into which run dir.

    run_dir: runs/demo
    stages:
      - name: depth
        config: 1-depth.yaml          # relative to this file
        set: {trainer.max_epochs: 3}  # dotted overrides; may hold ${stage.outputs.x} references

Command-line overrides are routed by their first key part: a stage name (`depth.trainer.devices=2`),
a pipeline field (`run_dir=/tmp/r`), or anything else to every stage (`trainer.devices=2`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import Field

from fusionlab.artifacts import json_digest
from fusionlab.config import (
    Section,
    apply_overrides,
    find_references,
    key_config,
    load_yaml,
    parse_overrides,
    substitute_references,
    validate,
)
from fusionlab.errors import ConfigError
from fusionlab.pipeline.code import dynamic_dependencies, stage_code
from fusionlab.pipeline.manifest import stage_key
from fusionlab.stages.base import WandbSettings, load_stage_module


class StageEntry(Section):
    name: str
    config: str
    set: dict[str, Any] = {}


class PipelineConfig(Section):
    run_dir: str = "runs/default"
    # How a stage process starts: a command prefix that accepts `-m fusionlab stage ...`,
    # e.g. "torchrun --nproc_per_node=4" or "srun python". Default: this Python interpreter.
    launcher: str | None = None
    wandb: WandbSettings = WandbSettings()
    report: bool = True
    # Settings sized for a small CPU that the papers would not use (few epochs, small crops, a prior):
    # the report names them in one line. Not part of any stage's key.
    cpu_sized: list[str] = []
    stages: list[StageEntry] = Field(min_length=1)


@dataclass
class StageSpec:
    """One stage of a pipeline, fully resolved but not yet run."""

    name: str
    index: int
    source: str                 # where its config came from, for error messages
    module: ModuleType
    symbolic: dict              # validated config with ${...} references kept (hashed into the key)
    resolved: dict              # the same with references replaced by absolute paths
    deps: list[str] = field(default_factory=list)
    out_dir: Path = Path()

    @property
    def type(self) -> str:
        return self.symbolic["stage"]

    @property
    def key_config(self) -> dict:
        """The symbolic config without operational keys: the config part of the key."""
        return key_config(self.module.Config, self.symbolic)

    @property
    def config_hash(self) -> str:
        return json_digest(self.key_config)

    @property
    def code(self) -> dict:
        """{"hash", "modules"}: the code this stage runs (its import closure and its hook's modules).
        Not cached: a hook may read an upstream artifact that appears while the pipeline runs."""
        return stage_code(self.module.__name__, dynamic_dependencies(self.module, self.resolved))

    def key(self, upstream: dict[str, dict]) -> str:
        """The stage key given its upstream manifests (name -> manifest)."""
        return stage_key(self.type, self.config_hash, upstream, self.code["hash"])

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.module.OUTPUTS)


def load_stage_config(path: str | Path, overrides: dict[str, Any] | None = None, source: str | None = None):
    """Load one stage YAML with overrides; returns (module, validated symbolic dict)."""
    raw = apply_overrides(load_yaml(path), overrides or {})
    return resolve_stage_dict(raw, source or str(path))


def resolve_stage_dict(raw: dict, source: str):
    if "stage" not in raw:
        raise ConfigError(f"{source}: missing key 'stage' (the stage type, e.g. 'stage: depth')")
    module = load_stage_module(str(raw["stage"]), source)
    if hasattr(module, "expand_config"):
        try:
            raw = module.expand_config(raw)
        except ConfigError as exc:  # name the file, as validate() does
            raise ConfigError(f"{source}: {exc}") from None
    config = validate(module.Config, raw, source)
    return module, config.model_dump(mode="json")


def _hint_misspelt_stage(exc: ConfigError, all_over: dict, stage_names: list, path: Path) -> None:
    """`deph.x=1` is routed to every stage (no stage is called 'deph'); when a stage then rejects
    the key 'deph', say which stage name was probably meant instead."""
    import difflib

    for key in all_over:
        head, _, rest = key.partition(".")
        close = difflib.get_close_matches(head, [n for n in stage_names if n], n=1, cutoff=0.75)
        if rest and close and f"'{head}'" in str(exc):
            raise ConfigError(f"override '{key}': {path} has no stage named '{head}'; did you mean "
                              f"'{close[0]}.{rest}'?") from None


def load_pipeline(path: str | Path, cli_overrides: list[str] = ()) -> tuple[PipelineConfig, list[StageSpec]]:
    path = Path(path)
    data = load_yaml(path)
    overrides = parse_overrides(list(cli_overrides))
    stage_names = [s.get("name") for s in data.get("stages", []) if isinstance(s, dict)]
    pipe_over, stage_over, all_over = {}, {n: {} for n in stage_names}, {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head in stage_over and rest:
            stage_over[head][rest] = value
        elif head in PipelineConfig.model_fields:
            pipe_over[key] = value
        else:
            all_over[key] = value
    pipeline = validate(PipelineConfig, apply_overrides(data, pipe_over), str(path))
    assert isinstance(pipeline, PipelineConfig)
    run_dir = Path(pipeline.run_dir).expanduser().resolve()

    seen: dict[str, StageSpec] = {}
    specs: list[StageSpec] = []
    for index, entry in enumerate(pipeline.stages):
        if entry.name in seen:
            raise ConfigError(f"{path}: stage name '{entry.name}' is used twice in 'stages'")
        cfg_path = (path.parent / entry.config) if not Path(entry.config).is_absolute() else Path(entry.config)
        source = f"{cfg_path} (stage '{entry.name}' of {path})"
        raw = apply_overrides(load_yaml(cfg_path), {**entry.set, **all_over, **stage_over.get(entry.name, {})})
        try:
            module, symbolic = resolve_stage_dict(raw, source)
        except ConfigError as exc:
            _hint_misspelt_stage(exc, all_over, stage_names, path)
            raise
        deps: list[str] = []
        for dep, output in find_references(symbolic):
            if dep not in seen:
                where = "later in" if dep in stage_names else "not in"
                raise ConfigError(
                    f"{source}: reference '${{{dep}.outputs.{output}}}' names stage '{dep}', which is {where} "
                    f"the pipeline; list '{dep}' before '{entry.name}' or override the key with a path"
                )
            if output.split("/")[0] not in seen[dep].outputs:
                raise ConfigError(
                    f"{source}: reference '${{{dep}.outputs.{output}}}': stage '{dep}' has outputs "
                    f"{', '.join(seen[dep].outputs)}, not '{output}'"
                )
            if dep not in deps:
                deps.append(dep)
        resolved = substitute_references(symbolic, lambda s, o: run_dir / s / o)
        spec = StageSpec(entry.name, index, source, module, symbolic, resolved, deps, run_dir / entry.name)
        seen[entry.name] = spec
        specs.append(spec)
    return pipeline, specs
