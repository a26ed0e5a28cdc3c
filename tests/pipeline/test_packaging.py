"""The wheel is a working install: built from the checkout, installed into an isolated folder, it
runs the packaged demo pipeline and fuses with the shipped model from an empty directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


def _sources(repo: Path, dest: Path) -> Path:
    """The files a clean clone has that the build reads (no runs/, .venv/ or caches)."""
    dest.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(repo / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(repo / "fusionlab", dest / "fusionlab", ignore=skip)
    shutil.copytree(repo / "stages", dest / "stages", ignore=skip)
    return dest


@pytest.fixture(scope="module")
def installed(repo_dir, tmp_path_factory) -> Path:
    """`pip install --no-deps --target` of a wheel built offline from this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _sources(repo_dir, tmp / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, text=True)
    wheel = next((tmp / "dist").glob("fusionlab-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(tmp / "site"), str(wheel)],
                   check=True, capture_output=True, text=True)
    return tmp / "site"


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # the installed copy first, then this venv's site-packages for the dependencies; no checkout on the path
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FUSIONLAB_CODE_VERSION")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
    code = "import sys, fusionlab.cli as c; assert c.__file__.startswith(sys.argv[1]), c.__file__; sys.argv[1:2] = []; sys.exit(c.main())"
    return subprocess.run([sys.executable, "-s", "-c", code, str(site), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_wheel_carries_the_yamls_and_the_shipped_model(installed, repo_dir):
    configs = installed / "fusionlab" / "configs"
    for name in ("pipeline.yaml", "roadscene.yaml", "1-depth.yaml", "4-fusion.yaml"):
        assert (configs / name).read_bytes() == (repo_dir / "stages" / name).read_bytes(), name
    presets = sorted(p.relative_to(repo_dir).as_posix() for p in (repo_dir / "fusionlab" / "presets").glob("*/*.yaml"))
    assert presets and sorted(p.relative_to(installed).as_posix()
                              for p in (installed / "fusionlab" / "presets").glob("*/*.yaml")) == presets
    assert (installed / "fusionlab" / "presets" / "ldnf" / "README.md").is_file()  # the fidelity table
    shipped = installed / "fusionlab" / "shipped" / "baseline_roadscene"
    assert {p.name for p in shipped.iterdir()} >= {"config.json", "model.safetensors", "manifest.json"}
    assert (shipped / "model.safetensors").stat().st_size < 1_000_000
    py = {p.relative_to(repo_dir).as_posix() for p in (repo_dir / "fusionlab").rglob("*.py")}
    assert py <= {p.relative_to(installed).as_posix() for p in (installed / "fusionlab").rglob("*.py")}
    meta = next(installed.glob("fusionlab-*.dist-info")) / "METADATA"
    assert "License-Expression: AGPL-3.0-or-later" in meta.read_text()


def test_installed_package_runs_the_demo_plan_and_fuses_from_an_empty_dir(installed, tmp_path):
    import cv2
    import numpy as np

    work = tmp_path / "empty"
    work.mkdir()
    plan = _run(installed, work, "run", "demo", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert str(installed / "fusionlab" / "configs" / "pipeline.yaml") in plan.stdout
    assert "run   fusion" in plan.stdout and "run   detect" in plan.stdout

    rng = np.random.default_rng(0)
    for d in ("ir", "vi"):
        (tmp_path / d).mkdir()
    for i in range(2):
        assert cv2.imwrite(str(tmp_path / "ir" / f"{i}.png"), rng.integers(0, 255, (48, 64), dtype=np.uint8))
        assert cv2.imwrite(str(tmp_path / "vi" / f"{i}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    fused = _run(installed, work, "fuse", "--ir", "../ir", "--vi", "../vi", "--out", "fused")
    assert fused.returncode == 0, fused.stderr
    assert "shipped 'baseline_roadscene'" in fused.stdout and "fused 2 of 2 pair(s)" in fused.stdout
    assert sorted(p.name for p in (work / "fused").iterdir()) == ["0.png", "1.png"]
    assert sorted(p.name for p in work.iterdir()) == ["fused"], "nothing but the outputs in the working dir"


def test_installed_package_expands_a_preset_from_its_package_data(installed, tmp_path):
    """A preset's defaults come from the installed folder (importlib.resources), not a checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FUSIONLAB_CODE_VERSION")}
    env["PYTHONPATH"] = os.pathsep.join([str(installed), sysconfig.get_paths()["purelib"]])
    code = ("import sys, fusionlab; assert fusionlab.__file__.startswith(sys.argv[1]), fusionlab.__file__; "
            "from fusionlab.stages.fusion import Config, expand_config; "
            "c = Config.model_validate(expand_config({'stage': 'fusion', 'preset': 'tgif', 'data': {'root': 'x'}, "
            "'inputs': {'embeddings': 'e'}})); print(c.model['dim'], c.optim.step_epochs)")
    out = subprocess.run([sys.executable, "-s", "-c", code, str(installed)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["64", "50"]  # TGIF's paper width and its halve-every-50-epochs schedule
