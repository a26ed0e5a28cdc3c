"""`ldnf`: Language-Depth Navigated Fusion (papers/ldnf-language-depth-navigated-fusion.txt)."""

from fusionlab.presets import Preset


def requires(cfg) -> dict[str, str]:
    needed = {}
    if cfg.model.get("features", "diffusion") == "diffusion":
        needed["denoiser"] = "ldnf with model.features=diffusion (the stage-2 DDPM)"
    if cfg.depth_loss:
        needed["depth_ir"] = needed["depth_vis"] = "ldnf with depth_loss=on (the stage-1 depth nets)"
    return needed


PRESET = Preset("ldnf", net="LDNF", objective="LDNFObjective", text=("pooled", "text_dim"),
                switches=("text_guidance", "depth_loss"), build="net:build", requires=requires)
