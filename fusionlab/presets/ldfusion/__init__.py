"""`ldfusion`: language-driven loss in CLIP space (papers/ldfusion-language-driven-loss-clip.txt)."""

from fusionlab.presets import Preset


def requires(cfg) -> dict[str, str]:
    if not cfg.text_guidance:
        return {}
    why = "ldfusion's language loss (stage 3's CLIP and prompt embeddings)"
    return {"clip": why, "prompts": why}


# CLIP is used by the loss only: the network never reads text (no `text=`)
PRESET = Preset("ldfusion", net="LDFusionNet", objective="LDFusionObjective", requires=requires)
