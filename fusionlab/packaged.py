"""The YAMLs fusionlab ships: stage configs, pipelines and presets, in a checkout or a wheel.

There is one copy of each file, in the checkout's top-level `stages/` folder. A wheel carries the
same files as `fusionlab/configs/` (setup.py maps `stages/` to that package), so code asks
`config_dir()` instead of building a path relative to the source tree. `fusionlab run NAME`
accepts a pipeline file or the name of a shipped pipeline (`demo` is `pipeline.yaml`, the
embedded default), so an installed package runs from any directory.
"""

from __future__ import annotations

from pathlib import Path

from fusionlab.errors import ConfigError

ALIASES = {"demo": "pipeline"}  # name -> file stem


def config_dir() -> Path:
    """The folder holding the shipped stage and pipeline YAMLs."""
    from importlib.resources import files

    installed = Path(str(files("fusionlab"))) / "configs"
    if installed.is_dir():  # a wheel (or any non-editable install)
        return installed
    return Path(__file__).resolve().parents[1] / "stages"  # a checkout


def pipelines() -> dict[str, Path]:
    """Shipped pipelines by name (a YAML with a top-level `stages:` list), aliases included."""
    from fusionlab.config import load_yaml

    found = {p.stem: p for p in sorted(config_dir().glob("*.yaml")) if isinstance(load_yaml(p).get("stages"), list)}
    found.update({alias: found[stem] for alias, stem in ALIASES.items() if stem in found})
    return dict(sorted(found.items()))


def find_pipeline(name_or_path: str) -> Path:
    """A pipeline YAML given as a path (which wins when it exists) or as a shipped pipeline's name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix not in (".yaml", ".yml") and path.parent == Path("."):
        shipped = pipelines()
        if name_or_path in shipped:
            return shipped[name_or_path]
        import difflib

        close = difflib.get_close_matches(name_or_path, list(shipped), n=1)
        raise ConfigError(f"'{name_or_path}' is neither a pipeline file nor a shipped pipeline"
                          + (f"; did you mean '{close[0]}'?" if close else "")
                          + f" (shipped: {', '.join(shipped)}; or pass a path to a pipeline YAML)")
    raise ConfigError(f"pipeline file '{path}' does not exist (check the path, relative to {Path.cwd()}; "
                      f"shipped pipelines run by name, e.g. `fusionlab run demo`)")
