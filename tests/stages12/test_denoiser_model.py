import pytest
import torch

from fusionlab.errors import PipelineError
from fusionlab.models.denoiser import (
    DiffusionFeatureExtractor,
    build_scheduler,
    build_unet,
    epsilon_mse,
    from_model_space,
    generate_samples,
    load_denoiser,
    sample_grid,
    save_denoiser,
    to_model_space,
)

TINY = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "sample_size": 16}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_unet(**TINY).eval(), build_scheduler(num_train_timesteps=100)


def test_model_space_round_trip():
    ir, vi = torch.rand(2, 1, 8, 8), torch.rand(2, 3, 8, 8)
    x = to_model_space(ir, vi)
    assert x.shape == (2, 4, 8, 8) and x.min() >= -1 and x.max() <= 1
    ir2, vi2 = from_model_space(x)
    torch.testing.assert_close(ir2, ir)
    torch.testing.assert_close(vi2, vi)


def test_epsilon_mse_is_deterministic_with_a_generator_and_trains(tiny):
    unet, sched = tiny
    x0 = torch.rand(2, 4, 20, 18) * 2 - 1  # not a multiple of 4: padded inside
    a = epsilon_mse(unet, sched, x0, generator=torch.Generator().manual_seed(3))
    b = epsilon_mse(unet, sched, x0, generator=torch.Generator().manual_seed(3))
    assert a.item() == b.item() and a.item() > 0
    unet.train()
    loss = epsilon_mse(unet, sched, x0)
    loss.backward()
    assert all(p.grad is not None for p in unet.parameters() if p.requires_grad)
    unet.zero_grad()
    unet.eval()


def test_denoiser_save_load_round_trip(tmp_path, tiny):
    unet, sched = tiny
    save_denoiser(tmp_path / "denoiser", unet, sched)
    assert (tmp_path / "denoiser" / "model_index.json").is_file()
    assert (tmp_path / "denoiser" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    unet2, sched2 = load_denoiser(tmp_path / "denoiser")
    assert not unet2.training and not any(p.requires_grad for p in unet2.parameters())
    assert sched2.config.num_train_timesteps == 100 and sched2.config.prediction_type == "epsilon"
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([3, 70])
    with torch.no_grad():
        torch.testing.assert_close(unet2(x, t).sample, unet(x, t).sample, atol=1e-6, rtol=1e-6)


def test_load_denoiser_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="denoiser stage"):
        load_denoiser(tmp_path / "nothing")


def test_feature_extractor_shapes_match_channels_and_strides(tiny):
    unet, sched = tiny
    ext = DiffusionFeatureExtractor(unet, sched, timesteps=(5, 50), blocks=(0, 1, 2), seed=0)
    ir, vi = torch.rand(3, 1, 21, 30), torch.rand(3, 3, 21, 30)
    feats = ext(ir, vi)
    assert ext.channels == [32, 32, 16] and ext.strides == [2, 1, 1]  # 2 timesteps x widths 16, 16, 8
    assert len(feats) == 3
    for f, c, s in zip(feats, ext.channels, ext.strides, strict=True):
        assert f.shape == (3, c, -(-21 // s), -(-30 // s)) and f.dtype == torch.float32
        assert torch.isfinite(f).all()
    assert not any(p.requires_grad for p in ext.parameters())


def test_feature_extractor_is_deterministic_and_batch_independent(tiny):
    unet, sched = tiny
    ir, vi = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    a = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=7)(ir, vi)
    # _compute: a real second UNet pass (compute() would answer this repeat from its memo)
    b = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=7)._compute(ir, vi)
    c = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=8)(ir, vi)
    alone = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=7)(ir[1:], vi[1:])
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
    assert not torch.allclose(a[0], c[0])
    torch.testing.assert_close(alone[0][0], a[0][1], atol=1e-5, rtol=1e-5)


def test_feature_extractor_cache_reuses_and_invalidates(tmp_path, tiny):
    unet, sched = tiny
    ext = DiffusionFeatureExtractor(unet, sched, timesteps=(10,), blocks=(0, 2), cache_dir=tmp_path / "cache")
    ir, vi = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    first = ext(ir, vi, ids=["a", "b"])
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*.safetensors"))
    assert files == ["a.safetensors", "b.safetensors"]
    calls = []
    hook = unet.register_forward_hook(lambda *_: calls.append(1))
    again = ext(ir, vi, ids=["a", "b"])
    assert not calls  # served from the cache
    for f, g in zip(first, again, strict=True):
        torch.testing.assert_close(f, g, atol=0, rtol=0)
    changed = ext(ir * 0.5, vi, ids=["a", "b"])  # same ids, different images: recomputed
    hook.remove()
    assert calls and not torch.allclose(changed[0], first[0])


def test_a_frozen_copy_reuses_the_features_of_the_same_batch(tiny):
    """Stage 5 runs the net and its frozen copy on one batch: the second UNet pass is skipped,
    but never for a different image, other weights or other timesteps."""
    import copy

    unet, sched = tiny
    ext = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=0)
    twin = copy.deepcopy(ext)
    ir, vi = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in (ext.unet, twin.unet)]
    first = ext(ir, vi)
    assert len(calls) == 1
    again = twin(ir.clone(), vi.clone())  # equal content, other tensors
    assert len(calls) == 1
    torch.testing.assert_close(again[0], first[0], atol=0, rtol=0)
    flipped = twin(ir.flip(-1), vi.flip(-1))
    assert len(calls) == 2
    torch.testing.assert_close(flipped[0], ext._compute(ir.flip(-1), vi.flip(-1))[0], atol=0, rtol=0)
    other_t = DiffusionFeatureExtractor(unet, sched, timesteps=(60,), blocks=(1,), seed=0)
    other_t(ir.flip(-1), vi.flip(-1))
    assert len(calls) == 4  # _compute above + this one
    with torch.no_grad():
        next(twin.unet.parameters()).add_(1.0)  # new weights: a new fingerprint
    changed = twin(ir.flip(-1), vi.flip(-1))
    assert len(calls) == 5 and not torch.allclose(changed[0], flipped[0])
    for h in hooks:
        h.remove()


def test_feature_cache_key_tells_a_flipped_image_apart(tmp_path, tiny):
    unet, sched = tiny
    ext = DiffusionFeatureExtractor(unet, sched, timesteps=(10,), blocks=(0,), cache_dir=tmp_path / "cache")
    ir, vi = torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16)
    plain = ext(ir, vi, ids=["a"])
    flipped = ext(ir.flip(-1), vi.flip(-1), ids=["a"])  # same pixel sums, other image
    assert not torch.allclose(plain[0], flipped[0])
    torch.testing.assert_close(flipped[0], ext._compute(ir.flip(-1), vi.flip(-1))[0], atol=0, rtol=0)


def test_generated_samples_and_grid(tiny):
    unet, sched = tiny
    x = generate_samples(unet, sched, n=3, size=(12, 16), steps=3, seed=1)
    y = generate_samples(unet, sched, n=3, size=(12, 16), steps=3, seed=1)
    assert x.shape == (3, 4, 12, 16) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x, y)
    grid = sample_grid(x, columns=2)
    assert grid.shape == (3, 2 * 12 + 3 * 2, 2 * 32 + 3 * 2)  # 2 rows x 2 tiles of IR|RGB, 2 px padding


def test_bf16_autocast_step_on_cpu(tiny):
    unet = build_unet(**TINY)
    sched = build_scheduler(num_train_timesteps=100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = epsilon_mse(unet, sched, torch.rand(2, 4, 16, 16) * 2 - 1)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
