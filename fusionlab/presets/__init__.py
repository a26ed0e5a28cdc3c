"""Fusion method presets: one folder per method, found by discovery (see README.md here).

`fusionlab/presets/<name>/` holds a method's network (`net.py`), its objective (`objective.py`:
the loss config and the losses with their weights and frozen helpers), its default stage-4
config (`preset.yaml`, package data) and a README with the fidelity table. The folder's
`__init__.py` defines `PRESET = Preset(...)`, which names those parts by dotted path, so
importing it costs nothing; the parts are imported when first used. Adding a method means adding
a folder: `preset_names()` lists the subpackages of this package.

    preset_names() -> ["baseline", "ldfusion", "ldnf", "text2pixels", "tgif"]
    get_preset("tgif") -> Preset (net_class, loss_class, objective_class, needs_text, ...)
    build_objective(stage4_config, net) -> Objective   # usable outside stage 4 (stage 5's f(z))
"""

from __future__ import annotations

import copy
import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from fusionlab.errors import ConfigError, PipelineError

DEFAULT_PRESET = "ldnf"
SWITCHES = ("text_guidance", "depth_loss")  # top-level stage-4 keys a preset may read


@dataclass(frozen=True)
class Preset:
    """What stage 4 needs to know about a method (`PRESET = Preset(...)` in the folder's __init__.py).

    net:        the FusionNet class in the folder's net.py (registered under `name`).
    objective:  the Objective class in its objective.py; its `loss_class` is the pydantic Section
                of `loss.<name>.*`. Either may be "module:attr" instead (relative to the folder,
                or a full dotted module path).
    text:       (embedding, constructor argument) when the net reads caption embeddings with
                `text_guidance` on: "pooled" or "tokens", and the argument that receives its width.
    switches:   which of SWITCHES the preset has (the others must stay off).
    build:      optional "module:function(kwargs, cfg) -> net" for a net built from upstream
                artifacts (ldnf copies the stage-2 denoiser in); default `build_fusion_model`.
    requires:   optional function(cfg) -> {input key: why}: the `inputs.*` a config needs.
    """

    name: str
    net: str
    objective: str
    text: tuple[str, str] | None = None
    switches: tuple[str, ...] = ("text_guidance",)
    build: str | None = None
    requires: Callable[[Any], dict[str, str]] | None = None

    def _resolve(self, spec: str, module: str):
        if ":" in spec:
            module, _, spec = spec.partition(":")
        if "." not in module:
            module = f"{__name__}.{self.name}.{module}"
        return getattr(importlib.import_module(module), spec)

    @property
    def needs_text(self) -> bool:
        return self.text is not None

    @cached_property
    def net_class(self):
        return self._resolve(self.net, "net")

    @cached_property
    def objective_class(self):
        return self._resolve(self.objective, "objective")

    @property
    def loss_class(self):
        return self.objective_class.loss_class

    def build_function(self):
        return self._resolve(self.build, "net") if self.build else None

    @property
    def folder(self):
        """The preset's folder as an importlib.resources Traversable (works from a wheel too)."""
        from importlib.resources import files

        return files(f"{__name__}.{self.name}")

    def defaults(self, profile: str | None = None) -> dict:
        """The preset's default stage-4 config (its preset.yaml), with named profile `profile`
        (preset.yaml's `profiles.<name>`, e.g. the CPU demo's sizes) merged over it."""
        import yaml

        resource = self.folder / "preset.yaml"
        if not resource.is_file():
            raise ConfigError(f"preset '{self.name}': its preset.yaml is missing from the installed package "
                              f"({resource}); reinstall fusionlab")
        data = yaml.safe_load(resource.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"preset '{self.name}': preset.yaml must be a mapping of stage-4 keys")
        data.pop("preset", None)
        profiles = data.pop("profiles", None) or {}
        if profile is None:
            return data
        if profile not in profiles:
            close = difflib.get_close_matches(str(profile), list(profiles), n=1)
            hint = f", did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"profile: preset '{self.name}' has no profile '{profile}'{hint} "
                              f"(its profiles: {', '.join(profiles) or 'none'})")
        return deep_merge(data, profiles[profile])


def preset_modules(name: str) -> list[str]:
    """The modules a preset loads by name (its folder package, net and objective), for code keys.

    The registry names them by dotted string, so an import-closure scan of the stage cannot see them.
    """
    preset = get_preset(name)
    mods = [f"{__name__}.{name}"]
    for spec, default in ((preset.net, "net"), (preset.objective, "objective"), (preset.build, "net")):
        if not spec:
            continue
        module = spec.partition(":")[0] if ":" in spec else default
        mods.append(module if "." in module else f"{__name__}.{name}.{module}")
    return sorted(set(mods))


def preset_names() -> list[str]:
    """Every preset folder of this package (discovered, never listed by hand)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_"))


def get_preset(name: str) -> Preset:
    """The `Preset` of folder `name`; an unknown name is a ConfigError with the closest match."""
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f", did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"preset: unknown preset '{name}'{hint} (choose one of {', '.join(names)})")
    preset = importlib.import_module(f"{__name__}.{name}").PRESET
    if preset.name != name:
        raise ConfigError(f"fusionlab/presets/{name}/__init__.py names its PRESET '{preset.name}'; use '{name}'")
    return preset


# --------------------------------------------------------------------------- config expansion


def deep_merge(base: dict, top: dict) -> dict:
    """`top` over `base`, recursively for nested mappings (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validate_at(path: tuple[str, ...], model, data: Any, what: str):
    """Validate `data` with `model` as if it sat at key `path`, so errors name the full key path."""
    from pydantic import create_model

    from fusionlab.config import Section, validate

    wrapped, value = model, data
    for key in reversed(path):
        wrapped = create_model(f"At_{key}", __base__=Section, **{key: (wrapped, ...)})
        value = {key: value}
    checked = validate(wrapped, value, what)
    for key in path:
        checked = getattr(checked, key)
    return checked


def constructor_model(cls):
    """A pydantic model of `cls.__init__`'s keyword arguments (types from its annotations)."""
    import inspect
    import typing

    from pydantic import ConfigDict, create_model

    hints = typing.get_type_hints(cls.__init__)
    fields = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(f"{cls.__name__}Args", __config__=ConfigDict(extra="forbid", protected_namespaces=()),
                        **fields)


def expand_stage_config(raw: dict) -> dict:
    """Merge the chosen preset's preset.yaml (and `profile:`) under a raw stage-4 config and check it.

    `model.*` is checked against the net's constructor and `loss.<preset>.*` against its loss
    class, so a typo fails before any upstream stage runs. Only the chosen preset's loss section
    is kept (the stage key then ignores the others); a section of another preset is an error.
    Switches the preset does not have are normalised away (`depth_loss` -> None, and
    `text_guidance` -> False for a text-free preset); asking for one that it lacks is an error.
    """
    name = raw.get("preset", DEFAULT_PRESET)
    preset = get_preset(name)
    cfg = deep_merge(preset.defaults(raw.get("profile")), raw)
    cfg["preset"] = name
    loss = cfg.get("loss") or {}
    if not isinstance(loss, dict):
        raise ConfigError(f"loss: expected a mapping `loss.{name}.<term>: value`, got {loss!r}")
    others = sorted(k for k in loss if k != name)
    if others:
        raise ConfigError(f"loss.{others[0]}: this stage runs preset '{name}', so 'loss.{others[0]}.*' "
                          f"would be ignored; remove it, or set preset={others[0]}")
    checked = _validate_at(("loss", name), preset.loss_class, loss.get(name) or {}, f"preset '{name}'")
    cfg["loss"] = {name: checked.model_dump(mode="json")}
    model = cfg.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"model: expected a mapping of {name}'s constructor arguments, got {model!r}")
    what = f"preset '{name}' (model.* are {preset.net_class.__name__}'s arguments)"
    args = _validate_at(("model",), constructor_model(preset.net_class), model, what)
    cfg["model"] = {k: v for k, v in args.model_dump(mode="json").items() if k in model}
    for switch in SWITCHES:
        if switch in preset.switches:
            continue
        if cfg.get(switch):
            having = ", ".join(p for p in preset_names() if switch in get_preset(p).switches)
            raise ConfigError(f"{switch}: preset '{name}' has no such switch (presets that have it: {having}); "
                              f"remove it or set {switch}=off")
        cfg[switch] = False if switch == "text_guidance" else None
    view = SimpleNamespace(**{"text_guidance": True, "depth_loss": None, **cfg})  # the Config defaults
    inputs = cfg.get("inputs") or {}
    for key, why in required_inputs(view).items():  # a needed input left unset fails at plan time too
        if not inputs.get(key):
            raise ConfigError(f"inputs.{key}: {why} needs it; wire it to the upstream stage "
                              f"(`inputs.{key}: ${{<stage>.outputs.{key}}}`) or switch the option off")
    return cfg


def required_inputs(cfg) -> dict[str, str]:
    """{`inputs.*` key: why} that a validated stage-4 Config needs, for its preset and switches."""
    preset = get_preset(cfg.preset)
    needed = dict(preset.requires(cfg)) if preset.requires else {}
    if preset.needs_text and cfg.text_guidance:
        needed.setdefault("embeddings", f"{cfg.preset} with text_guidance")
    return needed


def require_input(cfg, key: str, why: str) -> str:
    """The path of `inputs.<key>`; a missing setting or file is one clear error."""
    path = getattr(cfg.inputs, key)
    if not path:
        raise ConfigError(f"inputs.{key}: {why} needs it; set it to the upstream artifact "
                          f"(e.g. `inputs.{key}=<run_dir>/<stage>/{key}`) or switch the option off")
    if not Path(path).exists():
        raise PipelineError(f"inputs.{key}: '{path}' does not exist; run the upstream stage first or fix the path")
    return path


# --------------------------------------------------------------------------- building


def text_dims(embeddings: str) -> dict[str, int]:
    """{"pooled": width, "tokens": width} of the stage-3 embedding cache."""
    from fusionlab.cache import EmbeddingCache

    cache = EmbeddingCache(embeddings)
    if not len(cache):
        raise PipelineError(f"embedding cache '{embeddings}' is empty; rerun stage 3 on this dataset")
    row = cache.get(cache.ids[:1])
    return {"pooled": int(row["pooled"].shape[-1]), "tokens": int(row["tokens"].shape[-1])}


def build_net(cfg):
    """The preset's network for a validated stage-4 Config, with the sizes its inputs dictate."""
    from fusionlab.models.fusion import build_fusion_model

    preset = get_preset(cfg.preset)
    kwargs = dict(cfg.model)
    if "text_guidance" in preset.switches:
        kwargs["text_guidance"] = cfg.text_guidance
    if preset.needs_text and cfg.text_guidance:
        field, argument = preset.text
        kwargs.setdefault(argument, text_dims(require_input(cfg, "embeddings", f"{cfg.preset} with text_guidance"))[field])
    if preset.build:
        return preset.build_function()(kwargs, cfg)
    return build_fusion_model({"name": preset.name, **kwargs})


def stage_config(config):
    """A validated stage-4 `Config` from a Config or its dict (e.g. a stage-4 manifest's config)."""
    from fusionlab.stages.fusion import Config

    if isinstance(config, Config):
        return config
    return Config.model_validate(expand_stage_config(dict(config)))  # expanding twice changes nothing


def build_objective(stage4_config, net):
    """The preset's Objective for a stage-4 config (dict or Config) and its net.

    `objective(fused, batch, text) -> {"total": ..., <term>: ...}`; call
    `objective.on_train_epoch_start(net, epoch)` at every epoch start. The objective loads its
    frozen helpers from `inputs.*`; move it with `.to(device)`.
    """
    cfg = stage_config(stage4_config)
    return get_preset(cfg.preset).objective_class(cfg, net)


__all__ = ["DEFAULT_PRESET", "Preset", "build_net", "build_objective", "deep_merge", "expand_stage_config",
           "get_preset", "preset_names", "require_input", "required_inputs", "text_dims"]
