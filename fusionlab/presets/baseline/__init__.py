"""`baseline`: fusionlab's own compact luminance CNN (no paper), the fast default for real data."""

from fusionlab.presets import Preset

PRESET = Preset(
    name="baseline",
    net="fusionlab.presets.baseline.net:BaselineFusion",
    loss="fusionlab.presets.baseline.objective:BaselineLoss",
    objective="fusionlab.presets.baseline.objective:BaselineObjective",
    switches=(),  # no text, no depth loss
)
