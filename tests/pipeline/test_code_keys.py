"""Stage keys cover what changes results: config without operational keys, the code the stage
runs (its import closure plus its `code_dependencies` hook), and the upstream outputs."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from fusionlab.pipeline.code import stage_code
from fusionlab.stages import STAGE_TYPES


def _config_hashes(pipeline: Path, *overrides: str) -> dict[str, str]:
    from fusionlab.pipeline.spec import load_pipeline

    return {s.name: s.config_hash for s in load_pipeline(pipeline, list(overrides))[1]}


def test_operational_keys_leave_the_key_alone(repo_dir):
    pipe = repo_dir / "stages" / "pipeline.yaml"
    base = _config_hashes(pipe)
    same = _config_hashes(pipe, "cpu_threads=1", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
                          "trainer.checkpoint_every_n_steps=5", "fusion.data.num_workers=2")
    assert same == base
    changed = _config_hashes(pipe, "fusion.trainer.max_epochs=7")
    assert changed["fusion"] != base["fusion"] and changed["depth"] == base["depth"]


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory, repo_dir) -> Path:
    """A copy of the fusionlab sources to edit (the scan reads files; nothing is imported from it)."""
    copy = tmp_path_factory.mktemp("src") / "fusionlab"
    shutil.copytree(repo_dir / "fusionlab", copy, ignore=shutil.ignore_patterns("__pycache__", "shipped", "configs"))
    return copy


def _hashes(root: Path, extra: dict[str, list[str]] | None = None, stages=("synth", "denoiser", "fusion")):
    return {name: stage_code(STAGE_TYPES[name], (extra or {}).get(name, []), roots={"fusionlab": root})["hash"]
            for name in stages}


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


def test_code_hash_follows_the_import_closure_and_the_hook(package_copy, monkeypatch):
    monkeypatch.delenv("FUSIONLAB_CODE_VERSION", raising=False)
    from fusionlab.stages import fusion

    hook = {"fusion": fusion.code_dependencies({"preset": "tgif"})}
    before = _hashes(package_copy, hook)
    every = _hashes(package_copy, hook, stages=tuple(STAGE_TYPES))
    _edit(package_copy / "report.py")
    _edit(package_copy / "commands" / "eval.py")
    assert _hashes(package_copy, hook, stages=tuple(STAGE_TYPES)) == every, "report.py and commands are no stage's code"

    _edit(package_copy / "presets" / "tgif" / "objective.py")  # the tgif preset's objective, loaded by name
    after = _hashes(package_copy, hook)
    assert after["fusion"] != before["fusion"]
    assert after["synth"] == before["synth"] and after["denoiser"] == before["denoiser"]

    # the preset's net is imported by name: only the hook puts it into the key, and only the chosen preset's
    ldnf = {"fusion": fusion.code_dependencies({"preset": "ldnf"})}
    only = ("fusion",)
    tgif_before, ldnf_before = after["fusion"], _hashes(package_copy, ldnf, only)["fusion"]
    _edit(package_copy / "presets" / "tgif" / "net.py")
    assert _hashes(package_copy, hook, only)["fusion"] != tgif_before
    assert _hashes(package_copy, ldnf, only)["fusion"] == ldnf_before


STAGE = '''
from fusionlab.artifacts import atomic_write_json
from fusionlab.stages.base import StageConfig

OUTPUTS = ("value.json",)


class Config(StageConfig):
    value: int = 1
    source: str | None = None


def run(cfg, ctx):
    from keystage.helper import scale  # a function-level import is part of the stage's code too

    atomic_write_json(ctx.output("value.json"), {"value": scale(cfg.value)})
    return {"value": scale(cfg.value)}
'''


def test_dry_run_names_the_changed_key_module_and_upstream(cli, cli_inproc, pipeline_env, tmp_path, monkeypatch):
    monkeypatch.delenv("FUSIONLAB_CODE_VERSION", raising=False)
    pkg = tmp_path / "src" / "keystage"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stage.py").write_text(STAGE)
    (pkg / "helper.py").write_text("def scale(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.setenv("PYTHONPATH", f"{pkg.parent}:{sys.path[0]}:" + __import__("os").environ["PYTHONPATH"])
    conf = tmp_path / "keys"
    conf.mkdir()
    (conf / "a.yaml").write_text("stage: keystage.stage\nvalue: 3\n")
    (conf / "b.yaml").write_text("stage: keystage.stage\nsource: ${a.outputs.value.json}\n")
    (conf / "p.yaml").write_text(textwrap.dedent("""\
        run_dir: kr
        wandb: {enabled: false}
        report: false
        stages:
          - {name: a, config: a.yaml}
          - {name: b, config: b.yaml}
        """))
    pipe = str(conf / "p.yaml")
    cli("run", pipe)
    assert "skip  a  up to date" in cli_inproc("run", pipe, "--dry-run").stdout

    out = cli_inproc("run", pipe, "a.cpu_threads=1", "--dry-run").stdout
    assert "skip  a  up to date" in out and "skip  b  up to date" in out  # operational
    out = cli_inproc("run", pipe, "a.value=4", "--dry-run").stdout
    assert "run   a  config changed (value)" in out and "run   b  upstream a reruns" in out

    (pkg / "helper.py").write_text("def scale(x):\n    return 3 * x\n")
    out = cli_inproc("run", pipe, "--dry-run").stdout
    assert "run   a  code changed (keystage.helper)" in out, out
    cli("run", pipe, "--only", "a")
    out = cli_inproc("run", pipe, "--dry-run").stdout
    assert "skip  a  up to date" in out
    assert "run   b  code changed (keystage.helper); upstream a produced new outputs" in out, out
