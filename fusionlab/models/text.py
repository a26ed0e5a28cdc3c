"""CLIP through open_clip: one wrapper that turns captions and images into CLIP features.

Stage 3 encodes captions (pooled feature + the text transformer's final token sequence, for
the cross-attention presets), a fixed prompt set (for the language-driven loss of LDFusion)
and, on request, images. Stage 4 loads the very same model from the `clip/` folder stage 3
writes, so CLIP-space losses and cached embeddings live in one space.

A model is `model` (open_clip architecture name such as `ViT-B-32`, `hf-hub:org/repo`, or
`tiny`: a small random CLIP for tests and the offline demo) plus `pretrained` (an open_clip
tag such as `openai`, a hub id, a local checkpoint file or folder, or null for random init).
Pretrained weights always go through `fusionlab.weights.resolve`, so offline runs without
weights fail with one clear error.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field

from fusionlab.config import Section
from fusionlab.errors import ConfigError, PipelineError

CHECKPOINT_NAMES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors",
    "open_clip_pytorch_model.bin", "pytorch_model.bin", "open_clip_pytorch_model.pth", "model.pth",
)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class TinyClipConfig(Section):
    """Architecture of the `tiny` random CLIP (text width == embed_dim, so tokens are [L, D])."""

    embed_dim: int = Field(64, gt=0)
    text_layers: int = Field(2, gt=0)
    text_heads: int = Field(2, gt=0)
    vision_layers: int = Field(2, gt=0)
    vision_width: int = Field(64, gt=0)
    image_size: int = Field(32, gt=0)
    patch_size: int = Field(8, gt=0)
    context_length: int = Field(77, gt=1)

    def model_cfg(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {"layers": self.vision_layers, "width": self.vision_width, "head_width": 32,
                           "patch_size": self.patch_size, "image_size": self.image_size},
            "text_cfg": {"context_length": self.context_length, "vocab_size": 49408, "width": self.embed_dim,
                         "heads": self.text_heads, "layers": self.text_layers},
        }


class ClipConfig(Section):
    """Which CLIP encodes text and images (`model.clip` in stage configs)."""

    model: str = "tiny"  # "tiny" | open_clip name (ViT-B-32, ...) | "hf-hub:org/repo"
    pretrained: str | None = None  # open_clip tag (openai), hub id, local file/folder, or null = random
    seed: int = 0  # random init seed (pretrained: null)
    tiny: TinyClipConfig = TinyClipConfig()
    batch_size: int = Field(64, gt=0)  # captions / images per encoder call


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over names, dtypes, shapes and bytes of the state dict: the identity of the weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def clip_source(cfg: ClipConfig):
    """Where the weights a ClipConfig asks for live (None: random initialisation)."""
    from fusionlab import weights

    if cfg.model.startswith("hf-hub:"):
        return weights.hub_source(cfg.model[len("hf-hub:"):])
    if cfg.pretrained is None:
        return None
    if cfg.model == "tiny":
        return weights.local_source(cfg.pretrained)
    return weights.open_clip_source(cfg.model, cfg.pretrained)


def _checkpoint_in(folder: Path) -> str:
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return str(folder / name)
    found = sorted(p.name for p in folder.iterdir())[:8]
    raise PipelineError(
        f"CLIP weights folder '{folder}' holds no open_clip checkpoint ({', '.join(CHECKPOINT_NAMES[:3])}, ...); "
        f"it holds: {', '.join(found) or 'nothing'}. Point `model.clip.pretrained` at the checkpoint file."
    )


def _build_open_clip(model_name: str, model_cfg: dict | None):
    """An architecture without weights (tiny config, or a named open_clip config)."""
    import open_clip

    if model_cfg is not None and model_name == "tiny":
        return open_clip.CLIP(**copy.deepcopy(model_cfg))
    return open_clip.create_model(model_name, pretrained=None, pretrained_text=False, pretrained_image=False,
                                  force_quick_gelu=bool((model_cfg or {}).get("quick_gelu", False)))


class ClipEncoder(torch.nn.Module):
    """Frozen open_clip model with its tokenizer and a differentiable, tensor-only preprocess."""

    def __init__(self, model, tokenizer, *, name: str, model_cfg: dict | None, preprocess: dict, source: dict):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.model_cfg = model_cfg
        self.preprocess_cfg = preprocess
        self.source = source  # how it was built (for the record only)
        self.register_buffer("mean", torch.tensor(preprocess["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess["std"]).view(1, 3, 1, 1), persistent=False)
        self._weights_hash: str | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_config(cls, spec: "ClipConfig | dict | str | Path", *, key: str = "model.clip") -> "ClipEncoder":
        """Build from a ClipConfig / dict, or load a folder written by `save` (stage 3's `clip/`)."""
        if isinstance(spec, (str, Path)):
            return cls.load(spec)
        cfg = spec if isinstance(spec, ClipConfig) else ClipConfig.model_validate(spec)
        import open_clip

        from fusionlab import weights

        name = cfg.model
        preprocess = {"image_size": cfg.tiny.image_size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                      "interpolation": "bicubic"}
        if name == "tiny":
            model_cfg = cfg.tiny.model_cfg()
            torch.manual_seed(cfg.seed)
            model = open_clip.CLIP(**copy.deepcopy(model_cfg))
            if cfg.pretrained is not None:
                source = clip_source(cfg)
                path = source.resolve(what="tiny CLIP weights", key=f"{key}.pretrained")
                file = _checkpoint_in(Path(path)) if Path(path).is_dir() else path
                with weights.loading("tiny CLIP weights", f"{key}.pretrained", cfg.pretrained, source):
                    open_clip.load_checkpoint(model, file)
            tokenizer = open_clip.SimpleTokenizer(context_length=cfg.tiny.context_length)
            return cls(model, tokenizer, name=name, model_cfg=model_cfg, preprocess=preprocess,
                       source={"model": name, "pretrained": cfg.pretrained, "seed": cfg.seed})
        model, source_name = cls._create_named(cfg, key)
        tokenizer = open_clip.get_tokenizer(source_name)
        pp = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = pp.get("size", getattr(model.visual, "image_size", 224))
        size = size[0] if isinstance(size, (tuple, list)) else size
        preprocess = {"image_size": int(size), "mean": list(pp.get("mean", OPENAI_MEAN)),
                      "std": list(pp.get("std", OPENAI_STD)), "interpolation": pp.get("interpolation", "bicubic")}
        model_cfg = open_clip.get_model_config(name) if not name.startswith(("hf-hub:", "local-dir:")) else None
        if model_cfg is not None and cfg.pretrained is not None:  # a tag's activation (openai: QuickGELU) is part of it
            model_cfg["quick_gelu"] = bool((open_clip.get_pretrained_cfg(name, cfg.pretrained) or {}).get("quick_gelu"))
        return cls(model, tokenizer, name=name, model_cfg=model_cfg, preprocess=preprocess,
                   source={"model": name, "pretrained": cfg.pretrained})

    @staticmethod
    def _create_named(cfg: ClipConfig, key: str):
        """(model, name for the tokenizer) of a named architecture: weights resolved locally first."""
        import open_clip

        from fusionlab import weights

        name, spec = cfg.model, cfg.pretrained
        what = f"CLIP '{name}'"
        source = clip_source(cfg)
        if name.startswith("hf-hub:"):
            hub_id = name[len("hf-hub:"):]
            path = source.resolve(what=what, key=f"{key}.model")
            schema = f"local-dir:{path}" if weights.is_local(path) else name
            with weights.loading(what, f"{key}.model", hub_id, source):
                return open_clip.create_model(schema), schema
        if open_clip.get_model_config(name) is None:
            import difflib

            hint = difflib.get_close_matches(name, open_clip.list_models() + ["tiny"], n=1)
            raise ConfigError(f"{key}.model: unknown open_clip model '{name}'"
                              + (f"; did you mean '{hint[0]}'?" if hint else "; see open_clip.list_models()"))
        if spec is None:
            torch.manual_seed(cfg.seed)
            return _build_open_clip(name, None), name
        path = source.resolve(what=f"{what} weights '{spec}'", key=f"{key}.pretrained")
        tag_cfg = open_clip.get_pretrained_cfg(name, spec) or {}
        # open_clip only warns when a tag's activation (openai: QuickGELU) differs from the architecture's
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        with weights.loading(f"{what} weights", f"{key}.pretrained", spec, source):
            if not weights.is_local(path):  # online: open_clip downloads the tag itself
                return open_clip.create_model(name, pretrained=spec, force_quick_gelu=quick_gelu), name
            file = _checkpoint_in(Path(path)) if Path(path).is_dir() else path
            preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
            return open_clip.create_model(name, pretrained=file, pretrained_text=False, force_quick_gelu=quick_gelu,
                                          force_preprocess_cfg=preprocess or None), name

    # ------------------------------------------------------------------ saving

    def config(self) -> dict:
        return {"name": self.name, "model_cfg": self.model_cfg, "preprocess": self.preprocess_cfg,
                "context_length": self.context_length, "source": self.source, "weights_sha256": self.weights_hash}

    def save(self, path: str | Path) -> Path:
        """Write config.json + model.safetensors, loadable with `ClipEncoder.from_config(path)`."""
        from fusionlab.artifacts import save_model

        return save_model(path, self.model, self.config())

    @classmethod
    def load(cls, path: str | Path) -> "ClipEncoder":
        import open_clip

        from fusionlab.artifacts import load_model_files, load_state

        config, state = load_model_files(path, what="CLIP model (stage 3 output clip/)",
                                         required=("name", "model_cfg", "context_length", "preprocess"))
        name = config["name"]
        if name.startswith(("hf-hub:", "local-dir:")):
            raise PipelineError(f"{path}: CLIP '{name}' cannot be rebuilt offline from its folder; "
                                "use an open_clip architecture name or `tiny`")
        model = _build_open_clip(name, config["model_cfg"])
        load_state(model, state, path, "CLIP model")
        if name == "tiny":
            tokenizer = open_clip.SimpleTokenizer(context_length=config["context_length"])
        else:
            tokenizer = open_clip.get_tokenizer(name)
        return cls(model, tokenizer, name=name, model_cfg=config["model_cfg"], preprocess=config["preprocess"],
                   source=config.get("source", {}))

    # ------------------------------------------------------------------ identity

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", 77))

    @property
    def embed_dim(self) -> int:
        return int(self.encode_text(["x"])[0].shape[-1])

    @property
    def weights_hash(self) -> str:
        if self._weights_hash is None:
            self._weights_hash = weights_hash(self.model)
        return self._weights_hash

    def fingerprint(self) -> dict:
        """What decides whether a cached embedding is still valid: model, weights and preprocessing."""
        return {"model": self.name, "weights_sha256": self.weights_hash,
                "preprocess": self.preprocess_cfg, "context_length": self.context_length}

    # ------------------------------------------------------------------ encoding

    def _ln_final(self) -> torch.nn.Module:
        for owner in (self.model, getattr(self.model, "text", None)):
            if owner is not None and isinstance(getattr(owner, "ln_final", None), torch.nn.Module):
                return owner.ln_final
        raise PipelineError(f"CLIP '{self.name}': its text tower has no `ln_final`; token features unavailable")

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pooled [B,D] L2-normalised, tokens [B,L,W] after ln_final, mask [B,L] bool of real tokens)."""
        device = self.mean.device
        ids = self.tokenizer(list(texts)).to(device)
        captured: list[torch.Tensor] = []
        hook = self._ln_final().register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            pooled = self.model.encode_text(ids, normalize=True)
        finally:
            hook.remove()
        tokens = captured[-1]
        if tokens.shape[:2] != ids.shape:  # a pooled-only ln_final (final_ln_after_pool) gives no sequence
            raise PipelineError(f"CLIP '{self.name}': ln_final output {tuple(tokens.shape)} is not a token sequence")
        return pooled.float(), tokens.float(), ids != 0

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,H,W] in [0,1] (C = 1 or 3) -> resized, normalised CLIP input; differentiable."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.preprocess_cfg["image_size"]
        mode = "bicubic" if self.preprocess_cfg.get("interpolation", "bicubic") == "bicubic" else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,H,W] in [0,1] -> [B,D] L2-normalised image features (keeps gradients for CLIP losses)."""
        return self.model.encode_image(self.preprocess(x), normalize=True).float()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, context_length={self.context_length}"

