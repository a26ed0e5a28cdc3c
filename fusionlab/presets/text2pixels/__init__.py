"""`text2pixels`: text-guided fusion with a codebook (papers/text2pixels-semantic-synergy-fusion-detection.txt)."""

from fusionlab.presets import Preset

PRESET = Preset("text2pixels", net="Text2Pixels", objective="Text2PixelsObjective", text=("tokens", "token_dim"))
