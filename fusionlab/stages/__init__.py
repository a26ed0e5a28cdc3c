"""One module per pipeline stage. Each defines `Config`, `OUTPUTS`, `HEADLINE` and `run(cfg, ctx)`.

`STAGE_TYPES` maps the `stage:` key of a stage YAML to its module; any other dotted module
path is imported as is (tests define tiny stages that way).
"""

STAGE_TYPES = {
    "synth": "fusionlab.stages.synth",
    "depth": "fusionlab.stages.depth",
    "denoiser": "fusionlab.stages.denoiser",
    "captions": "fusionlab.stages.captions",
    "fusion": "fusionlab.stages.fusion",
    "detect": "fusionlab.stages.detect",
}
