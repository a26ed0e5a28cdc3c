"""`text2pixels`: text-guided fusion with a codebook (papers/text2pixels-semantic-synergy-fusion-detection.txt)."""

from fusionlab.presets import Preset

PRESET = Preset(
    name="text2pixels",
    net="fusionlab.presets.text2pixels.net:Text2Pixels",
    loss="fusionlab.presets.text2pixels.objective:Text2PixelsLoss",
    objective="fusionlab.presets.text2pixels.objective:Text2PixelsObjective",
    needs_text=True,
    text_field="tokens",
    text_dim_arg="token_dim",
)
