"""The preset registry: discovered folders, package data, and a preset added as one folder."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAPER_PRESETS = ["baseline", "ldfusion", "ldnf", "text2pixels", "tgif"]


def test_presets_are_the_discovered_folders():
    from fusionlab.errors import ConfigError
    from fusionlab.models.fusion import registered_fusion_models
    from fusionlab.presets import get_preset, preset_names

    assert preset_names() == PAPER_PRESETS
    assert set(PAPER_PRESETS) <= set(registered_fusion_models())
    for name in PAPER_PRESETS:
        preset = get_preset(name)
        assert preset.name == name and (preset.folder / "README.md").is_file()
        assert isinstance(preset.defaults(), dict) and "profiles" not in preset.defaults()
        assert preset.defaults("cpu-demo") != preset.defaults()  # every preset has a CPU profile for the demo
    assert [get_preset(n).needs_text for n in PAPER_PRESETS] == [False, False, True, True, True]
    with pytest.raises(ConfigError, match="did you mean 'text2pixels'"):
        get_preset("text2pixel")


def test_adding_a_preset_is_adding_one_folder(tmp_path, monkeypatch):
    import fusionlab.presets as presets
    from fusionlab.models.fusion import build_fusion_model
    from fusionlab.stages import fusion

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "__init__.py").write_text(textwrap.dedent('''
        from fusionlab.presets import Preset
        PRESET = Preset("mine", net="Mine", objective="net:MineObjective", switches=())
    '''))
    (folder / "net.py").write_text(textwrap.dedent('''
        import torch
        from fusionlab.config import Section
        from fusionlab.models.fusion.base import FusionNet, register_fusion_model
        from fusionlab.presets.objective import Objective

        @register_fusion_model("mine")
        class Mine(FusionNet):
            def __init__(self, gain: float = 1.0):
                super().__init__()
                self.gain = torch.nn.Parameter(torch.tensor(gain))
            def forward(self, ir, vi, text=None):
                return (self.gain * torch.maximum(ir, self.luma(vi))).clamp(0, 1)

        class MineLoss(Section):
            weight: float = 1.0

        class MineObjective(Objective):
            loss_class = MineLoss
            def forward(self, fused, batch, text):
                total = self.lc.weight * (fused - batch["ir"]).abs().mean()
                return {"total": total}
    '''))
    (folder / "preset.yaml").write_text("model: {gain: 0.5}\nloss: {mine: {weight: 2.0}}\n")
    monkeypatch.setattr(presets, "__path__", [*presets.__path__, str(tmp_path)])
    assert "mine" in presets.preset_names()
    cfg = fusion.Config.model_validate(fusion.expand_config({"stage": "fusion", "preset": "mine", "data": {"root": "x"}}))
    assert cfg.model == {"gain": 0.5} and cfg.loss == {"mine": {"weight": 2.0}} and cfg.text_guidance is False
    assert float(build_fusion_model({"name": "mine"}).gain) == 1.0
    sys.modules.pop("fusionlab.presets.mine", None)
    sys.modules.pop("fusionlab.presets.mine.net", None)


def test_preset_files_are_package_data():
    """pyproject ships preset.yaml and README.md of every preset folder (importlib.resources reads them)."""
    import tomllib

    from fusionlab.presets import preset_names

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fusionlab.presets"]
    root = REPO / "fusionlab" / "presets"
    shipped = {p.relative_to(root).as_posix() for pattern in data for p in root.glob(pattern)}
    for name in preset_names():
        assert {f"{name}/preset.yaml", f"{name}/README.md"} <= shipped, name
    assert not (REPO / "stages" / "presets").exists()  # no repo-relative preset folder any more


# the wheel itself (YAMLs and READMEs installed, a preset expanded from them) is tests/pipeline/test_packaging.py


def _fidelity_block(name: str) -> str:
    import re

    text = (REPO / "fusionlab" / "presets" / name / "README.md").read_text()
    match = re.search(rf"<!-- fidelity:{name} -->\n.*?<!-- /fidelity:{name} -->", text, re.S)
    assert match, f"{name}/README.md has no fidelity table"
    return match.group(0)


@pytest.mark.fidelity
@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_fidelity_tables_agree_with_docs_and_with_the_config_keys(name):
    """docs/presets.md repeats each README's table verbatim, and every key a table names exists."""
    import re

    from fusionlab.data.config import DataConfig
    from fusionlab.presets import constructor_model, get_preset
    from fusionlab.stages.fusion import OptimConfig

    block = _fidelity_block(name)
    assert block in (REPO / "docs" / "presets.md").read_text()
    preset = get_preset(name)
    valid = {"model": set(constructor_model(preset.net_class).model_fields),
             f"loss.{name}": set(preset.loss_class.model_fields),
             "optim": set(OptimConfig.model_fields), "data": set(DataConfig.model_fields)}
    named = re.findall(r"`(model|loss\.\w+|optim|data)\.(\w+)", block)
    assert named
    for section, key in named:
        if section.startswith("loss.") and section != f"loss.{name}":
            pytest.fail(f"{name}'s table names another preset's key {section}.{key}")
        assert key in valid[section], f"{name}'s table names `{section}.{key}`, which is not a config key"
