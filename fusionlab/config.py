"""Typed configuration: YAML files validated by pydantic models, `a.b=value` overrides, and
`${stage.outputs.name}` references to upstream artifacts.

Every config model subclasses `Section`, which forbids unknown keys, so a misspelt key fails
before anything runs, with a message that names the file, the key path and the closest valid key.
Fields declared with `operational(...)` say how a stage runs, not what it produces (threads,
progress bars, workers, logging cadence); `key_config` leaves them out of the stage key.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusionlab.errors import ConfigError

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_.\-/]+)\}")


class Section(BaseModel):
    """Base of every config model: strict keys, values validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


OPERATIONAL = "operational"


def operational(default: Any, **kwargs: Any) -> Any:
    """A config field that changes how a stage runs but not its results (threads, progress bars,
    data-loader workers, logging cadence). It is validated like any field but left out of the
    stage key, so changing it reruns nothing. Same arguments as `pydantic.Field`."""
    return Field(default, json_schema_extra={OPERATIONAL: True}, **kwargs)


def key_config(model: type[BaseModel], data: Any) -> Any:
    """`data` (a dump of `model`) without its operational fields, at any depth: what the key hashes."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            out[key] = value
            continue
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get(OPERATIONAL):
            continue
        sub = _model_in(field.annotation)
        if sub is not None:
            if isinstance(value, dict) and get_origin(field.annotation) is dict:
                value = {k: key_config(sub, v) for k, v in value.items()}
            elif isinstance(value, list):
                value = [key_config(sub, v) for v in value]
            else:
                value = key_config(sub, value)
        out[key] = value
    return out


# --------------------------------------------------------------------------- YAML and overrides


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a syntax error becomes one clear ConfigError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist (check the path, relative to {Path.cwd()})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def parse_value(text: str) -> Any:
    """Parse an override's value the way YAML would (`3` -> int, `true` -> bool, `[1,2]` -> list)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn `["a.b=1", "c=x"]` into `{"a.b": 1, "c": "x"}`; a malformed item is a ConfigError."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}' is not of the form key.path=value")
        out[key] = parse_value(value)
    return out


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set `data[a][b] = value` for `dotted == "a.b"`, creating intermediate mappings."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Return a deep copy of `data` with dotted `overrides` applied."""
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return data


# --------------------------------------------------------------------------- validation


def _closest_key(model: type[BaseModel], loc: tuple) -> str | None:
    """Walk `loc` through nested models and suggest the closest valid field for its last part."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _model_in(field.annotation)
        if current is None:
            return None
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return None
    match = difflib.get_close_matches(str(loc[-1]), list(current.model_fields), n=1, cutoff=0.5)
    return match[0] if match else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside an annotation such as `Foo`, `Foo | None` or `list[Foo]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validate(model: type[BaseModel], data: dict, source: str) -> BaseModel:
    """Validate `data` against `model`; errors name `source`, the key path and a suggestion."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            path = ".".join(str(p) for p in loc) or "(top level)"
            if err["type"] == "extra_forbidden":
                hint = _closest_key(model, loc)
                fix = f"did you mean '{'.'.join(str(p) for p in loc[:-1] + (hint,))}'?" if hint else \
                    "remove it (valid keys are listed in the stage's config class)"
                lines.append(f"unknown key '{path}': {fix}")
            elif err["type"] == "missing":
                lines.append(f"missing required key '{path}'")
            else:
                lines.append(f"bad value for '{path}': {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


# --------------------------------------------------------------------------- references


def find_references(obj: Any) -> list[tuple[str, str]]:
    """All `(stage, output)` pairs referenced as `${stage.outputs.output}` anywhere in `obj`."""
    found: list[tuple[str, str]] = []
    if isinstance(obj, str):
        found.extend(REFERENCE.findall(obj))
    elif isinstance(obj, dict):
        for value in obj.values():
            found.extend(find_references(value))
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            found.extend(find_references(value))
    return found


def substitute_references(obj: Any, resolve) -> Any:
    """Replace every `${stage.outputs.x}` by `resolve(stage, x)` (a path string)."""
    if isinstance(obj, str):
        return REFERENCE.sub(lambda m: str(resolve(m.group(1), m.group(2))), obj)
    if isinstance(obj, dict):
        return {k: substitute_references(v, resolve) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute_references(v, resolve) for v in obj]
    return obj
