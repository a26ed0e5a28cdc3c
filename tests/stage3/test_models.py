"""CLIP wrapper and captioners: real code paths with tiny local models, clear offline errors."""

import json

import numpy as np
import pytest
import torch

from fusionlab.errors import ConfigError, DataError, WeightsMissingError
from fusionlab.models.captioner import (
    CaptionerConfig,
    DepthTemplateCaptioner,
    FileCaptioner,
    build_captioner,
    join_captions,
)
from fusionlab.models.text import ClipEncoder

TINY = {"tiny": {"embed_dim": 32, "vision_width": 32, "image_size": 32, "context_length": 40}}


@pytest.fixture(scope="module")
def tiny_clip():
    return ClipEncoder.from_config(TINY)


def test_tiny_clip_shapes_and_save_load(tiny_clip, tmp_path):
    pooled, tokens, mask = tiny_clip.encode_text(["a warm person at near range", "x"])
    assert pooled.shape == (2, 32) and tokens.shape == (2, 40, 32) and mask.shape == (2, 40)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert mask[0].sum() > mask[1].sum() == 3  # <start> x <end>
    img = tiny_clip.encode_image(torch.rand(2, 1, 48, 64))
    assert img.shape == (2, 32) and torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)
    tiny_clip.save(tmp_path / "clip")
    again = ClipEncoder.from_config(tmp_path / "clip")
    assert again.weights_hash == tiny_clip.weights_hash and again.fingerprint() == tiny_clip.fingerprint()
    assert torch.allclose(again.encode_text(["a car"])[1], tiny_clip.encode_text(["a car"])[1], atol=1e-6)
    assert ClipEncoder.from_config({**TINY, "seed": 1}).weights_hash != tiny_clip.weights_hash


def test_encode_image_keeps_gradients_for_clip_losses(tiny_clip):
    x = torch.rand(1, 3, 40, 40, requires_grad=True)
    tiny_clip.encode_image(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pretrained_clip_offline_gives_the_resolver_error():
    with pytest.raises(WeightsMissingError, match="model.clip.pretrained"):
        ClipEncoder.from_config({"model": "ViT-B-32", "pretrained": "openai"})
    with pytest.raises(WeightsMissingError, match="model.clip.model"):
        ClipEncoder.from_config({"model": "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"})
    with pytest.raises(ConfigError, match="did you mean 'ViT-B-32'"):
        ClipEncoder.from_config({"model": "ViT-B-23"})


def test_named_architecture_loads_a_local_checkpoint(tmp_path, tiny_clip):
    """The pretrained path (resolver -> open_clip checkpoint loading) with a tiny local checkpoint."""
    import open_clip
    from safetensors.torch import save_file

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "FusionlabTinyTest.json").write_text(json.dumps(tiny_clip.model_cfg))
    open_clip.add_model_config(tmp_path / "cfg")
    weights = tmp_path / "weights"
    weights.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}, str(weights / "open_clip_model.safetensors"))
    for spec in (weights, weights / "open_clip_model.safetensors"):  # a folder or the file itself
        enc = ClipEncoder.from_config({"model": "FusionlabTinyTest", "pretrained": str(spec)})
        assert enc.weights_hash == tiny_clip.weights_hash
    with pytest.raises(WeightsMissingError, match="does not exist"):
        ClipEncoder.from_config({"model": "FusionlabTinyTest", "pretrained": str(tmp_path / "nope.safetensors")})


class ConstantDepth(torch.nn.Module):
    def __init__(self, metres):
        super().__init__()
        self.metres = torch.nn.Parameter(torch.tensor(float(metres)), requires_grad=False)

    def forward(self, x):
        return self.metres.expand(x.shape[0], 1, *x.shape[-2:]).clone()


def _batch(night=False):
    ir = torch.full((1, 1, 48, 64), 0.1)
    ir[0, 0, 10:30, 3:9] = 0.9  # a warm upright blob on the left
    vi = torch.full((1, 3, 48, 64), 0.05 if night else 0.6)
    vi[0, :, ::4] += 0.2  # some texture
    return {"id": ["a"], "ir": ir, "vi": vi}


class FakeDetector(torch.nn.Module):
    """Stands in for a YOLO: `names` plus fixed predictions (the real path is in the slow real-size test)."""

    names = {0: "person", 1: "car"}

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1), requires_grad=False)


def test_depth_template_words_follow_depth_and_evidence():
    cfg = CaptionerConfig(near_m=10, far_m=30)
    near = DepthTemplateCaptioner(ConstantDepth(5), ConstantDepth(5), cfg)
    rec = near.caption(_batch())[0]
    assert rec["caption_ir"].startswith("thermal image: a warm upright object at near range on the left")
    assert "close background at 5 m" in rec["caption_ir"] and rec["caption_ir"].endswith("day")
    assert rec["caption"] == join_captions(rec["caption_ir"], rec["caption_vi"])
    far = DepthTemplateCaptioner(ConstantDepth(50), ConstantDepth(50), cfg, FakeDetector())
    b = _batch(night=True)
    boxes = np.array([[1, 0.8, 0.5, 0.2, 0.3], [1, 0.85, 0.5, 0.1, 0.2]], np.float32)  # two cars on the right
    rec = far.caption_one(b["ir"][0, 0].numpy(), b["vi"][0].numpy(), np.full((48, 64), 50.0), np.full((48, 64), 50.0),
                          boxes, boxes)
    assert "two faint cars at far range on the right" in rec["caption_ir"]
    assert "warm upright object at far range on the left" in rec["caption_ir"]
    assert "two barely visible cars at far range on the right" in rec["caption_vi"]
    assert rec["caption_vi"].endswith("dark night") and "distant background at 50 m" in rec["caption_ir"]
    no_depth = DepthTemplateCaptioner(None, None, cfg).caption(_batch())[0]
    assert no_depth["caption_ir"] == "thermal image: a warm upright object on the left; day"  # no range words


def test_captioners_read_only_the_images(monkeypatch):
    """Labels, GT depth and dataset captions in a batch never change a caption; detections do."""
    import fusionlab.models.detector as det

    boxes = {"ir": torch.tensor([[40.0, 10, 60, 40, 0.9, 0]]), "vi": torch.tensor([[40.0, 10, 60, 40, 0.9, 1]])}
    monkeypatch.setattr(det, "predict", lambda model, images, cfg: [boxes["ir" if images.shape[1] == 1 else "vi"]])
    captioner = DepthTemplateCaptioner(ConstantDepth(20), ConstantDepth(20), CaptionerConfig(), FakeDetector())
    clean = captioner.caption(_batch())[0]
    assert "person at mid range on the right" in clean["caption_ir"] and "car at mid range on the right" in clean["caption_vi"]
    labelled = {**_batch(), "boxes": torch.tensor([[0, 0, 0.2, 0.5, 0.2, 0.5]]), "depth": torch.full((1, 1, 48, 64), 3.0),
                "caption": ["a person on the left"]}
    assert captioner.caption(labelled)[0] == clean


def test_file_captioner_jsonl_csv_and_no_dataset_fallback(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "caption_ir": "hot man", "caption_vi": "dark street"}) + "\n"
                     + json.dumps({"id": "b", "caption": "one text"}) + "\n")
    cap = FileCaptioner(CaptionerConfig(kind="file", path=str(jsonl)))
    recs = cap.caption({"id": ["a", "b"]})
    assert recs[0]["caption"] == "hot man. dark street." and recs[1]["caption"] == "one text"
    csv = tmp_path / "c.csv"
    csv.write_text("id,caption\na,from csv\n")
    assert FileCaptioner(CaptionerConfig(kind="file", path=str(csv))).caption({"id": ["a"]})[0]["caption"] == "from csv"
    with pytest.raises(DataError, match="no caption for sample 'zz'"):
        cap.caption({"id": ["zz"]})
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        FileCaptioner(CaptionerConfig(kind="file", path=str(tmp_path / "bad.jsonl")))
    with pytest.raises(ConfigError, match="needs model.captioner.path"):  # the dataset's captions are no fallback
        FileCaptioner(CaptionerConfig(kind="file"))


def _tiny_blip(folder):
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + \
        "a an image photo infrared with of car person at near mid far range on the left right centre in , .".split()
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    tok.add_special_tokens({"bos_token": "[DEC]"})
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = BlipConfig(text_config=dict(vocab_size=len(words), max_position_embeddings=64, bos_token_id=5,
                                      pad_token_id=0, sep_token_id=3, eos_token_id=3, **small),
                     vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=32, image_text_hidden_size=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(folder)
    return folder


def test_blip_offline_error_and_tiny_local_model(tmp_path, depth_nets):
    base = {"kind": "blip", "depth_ir": str(depth_nets[0]), "depth_vis": str(depth_nets[1])}
    with pytest.raises(WeightsMissingError, match="BLIP captioner.*model.captioner.pretrained"):
        build_captioner(CaptionerConfig(**base, pretrained="Salesforce/blip-image-captioning-base"))
    with pytest.raises(ConfigError, match="required for the blip captioner"):
        build_captioner(CaptionerConfig(**base))
    folder = _tiny_blip(tmp_path / "blip")
    batch = _batch()
    for mode in ("append", "prompt"):
        captioner = build_captioner(CaptionerConfig(**base, pretrained=str(folder), depth_mode=mode, max_new_tokens=4))
        assert type(captioner).__name__ == "BlipCaptioner" and captioner.model.config.model_type == "blip"
        rec = captioner.caption(batch)[0]
        assert rec["caption"] == join_captions(rec["caption_ir"], rec["caption_vi"])
        if mode == "append":  # the depth-aware summary is appended to BLIP's own caption
            summary = captioner.template.caption(batch)[0]
            assert rec["caption_ir"].endswith(captioner.template.depth_summary(summary, "ir"))
            assert rec["caption_vi"].endswith(captioner.template.depth_summary(summary, "vi"))
            assert " range " in rec["caption_ir"]
        else:  # BLIP continues a prompt that carries the depth summary
            assert "range" in rec["caption_ir"] and rec["caption_ir"].startswith("an infrared image with")


def test_depth_nets_come_in_pairs():
    with pytest.raises(ConfigError, match="depth_ir and depth_vis"):
        build_captioner(CaptionerConfig(depth_ir="x"))
    assert build_captioner(CaptionerConfig()).depth_ir is None  # no depth: captions without ranges
