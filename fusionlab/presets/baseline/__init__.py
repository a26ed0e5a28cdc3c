"""`baseline`: fusionlab's own compact luminance CNN (no paper), the fast default for real data."""

from fusionlab.presets import Preset

PRESET = Preset("baseline", net="BaselineFusion", objective="BaselineObjective", switches=())
