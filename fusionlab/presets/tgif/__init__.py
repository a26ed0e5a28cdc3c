"""`tgif`: Text-Guided Image Fusion (papers/tgif-text-guided-image-fusion.txt)."""

from fusionlab.presets import Preset

PRESET = Preset(
    name="tgif",
    net="fusionlab.presets.tgif.net:TGIF",
    loss="fusionlab.presets.tgif.objective:TGIFLoss",
    objective="fusionlab.presets.tgif.objective:TGIFObjective",
    needs_text=True,
    text_field="tokens",
    text_dim_arg="token_dim",
)
