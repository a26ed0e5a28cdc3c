"""`tgif`: Text-Guided Image Fusion (papers/tgif-text-guided-image-fusion.txt)."""

from fusionlab.presets import Preset

PRESET = Preset("tgif", net="TGIF", objective="TGIFObjective", text=("tokens", "token_dim"))
