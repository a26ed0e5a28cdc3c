"""The code a stage runs, as part of its key.

A stage's code is its module and everything that module imports from fusionlab (and from its
own top-level package, for stages defined outside fusionlab), found statically: every `import`
and `from ... import` in the source, function-level ones included, followed transitively, plus
the `__init__.py` of every package on the way (importing `a.b.c` runs `a` and `a.b`). Code a
stage loads by name at run time is invisible to that scan, so a stage module may define

    def code_dependencies(config: dict) -> list[str]:   # the resolved stage config
        return [f"fusionlab.presets.{config['preset']}"]

and those modules (with their own imports) join the set. Editing `report.py` therefore reruns
no stage, and editing a preset's loss reruns the stages that use that preset.

FUSIONLAB_CODE_VERSION=<label> pins the code part of every key (for developers who edit the
package and do not want their edits to rerun finished stages).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

HOOK = "code_dependencies"
PIN_ENV = "FUSIONLAB_CODE_VERSION"


def stage_code(module_name: str, extra: list[str] = (), roots: dict[str, Path] | None = None) -> dict:
    """{"hash": ..., "modules": {module: sha256}} of `module_name`'s import closure plus `extra`.

    `roots` maps a top-level package name to its folder (default: where Python finds it), so a
    copy of the package can be scanned, as the tests do.
    """
    pinned = os.environ.get(PIN_ENV)
    if pinned:
        return {"hash": hashlib.sha256(f"pinned:{pinned}".encode()).hexdigest(), "modules": {}, "pinned": pinned}
    follow = {"fusionlab", module_name.split(".")[0]}
    files = import_closure([module_name, *extra], follow, roots or {})
    modules = {name: _file_sha(path, path.stat().st_mtime_ns, path.stat().st_size) for name, path in files.items()}
    digest = hashlib.sha256("\n".join(f"{n} {h}" for n, h in sorted(modules.items())).encode()).hexdigest()
    return {"hash": digest, "modules": dict(sorted(modules.items()))}


def dynamic_dependencies(module, config: dict) -> list[str]:
    """Modules the stage loads by name for this config (its `code_dependencies` hook), if any."""
    hook = getattr(module, HOOK, None)
    return list(hook(config)) if callable(hook) else []


def import_closure(names: list[str], follow: set[str], roots: dict[str, Path]) -> dict[str, Path]:
    """module name -> source file for `names` and everything they import within `follow`."""
    found: dict[str, Path] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found or name.split(".")[0] not in follow:
            continue
        path = _source(name, roots)
        if path is None:
            continue
        found[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(_imports(name, path, roots))
    return found


def _imports(name: str, path: Path, roots: dict[str, Path]) -> list[str]:
    """Module names imported anywhere in `path` (absolute and relative, at any nesting level)."""
    st = path.stat()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[str] = []
    for level, module, names in _import_nodes(path, st.st_mtime_ns, st.st_size):
        if level:
            base = package.split(".")
            base = base[: len(base) - (level - 1)] if level > 1 else base
            module = ".".join(base + ([module] if module else []))
        out.append(module)
        # `from pkg import sub` may name a submodule rather than an attribute
        out.extend(f"{module}.{n}" for n in names if n != "*" and _source(f"{module}.{n}", roots) is not None)
    return out


@lru_cache(maxsize=4096)
def _import_nodes(path: Path, mtime_ns: int, size: int) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """(level, module, imported names) of every import statement in the file (parsed once per version)."""
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
    return tuple(found)


def _source(name: str, roots: dict[str, Path]) -> Path | None:
    """The .py file of module `name` (a package's __init__.py), found without importing it."""
    top, *rest = name.split(".")
    bases = [roots[top]] if top in roots else _top_dirs(top)
    for base in bases:
        if base.suffix == ".py":  # a top-level single-file module
            return base if not rest else None
        target = base.joinpath(*rest)
        if (target / "__init__.py").is_file():
            return target / "__init__.py"
        if target.with_suffix(".py").is_file():
            return target.with_suffix(".py")
    return None


def _top_dirs(top: str) -> list[Path]:
    spec = importlib.util.find_spec(top)  # a top-level name: found without running any code
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    return [Path(spec.origin)] if spec.origin and spec.origin.endswith(".py") else []


@lru_cache(maxsize=4096)
def _file_sha(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
