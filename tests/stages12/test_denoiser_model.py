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
    b = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=7)(ir, vi)
    c = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=8)(ir, vi)
    alone = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=7)(ir[1:], vi[1:])
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
    assert not torch.allclose(a[0], c[0])
    torch.testing.assert_close(alone[0][0], a[0][1], atol=1e-5, rtol=1e-5)


def test_reuse_computes_a_batch_once_and_only_inside_the_block(tiny):
    """Stage 5 evaluates one net at several parameter values on one batch: inside `reuse()` the
    frozen UNet runs once per distinct pair; outside it, every call is a fresh pass (no hidden memo)."""
    unet, sched = tiny
    ext = DiffusionFeatureExtractor(unet, sched, timesteps=(30,), blocks=(1,), seed=0)
    ir, vi = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    calls = []
    hook = unet.register_forward_hook(lambda *_: calls.append(1))
    with ext.reuse():
        first = ext(ir, vi)
        again = ext(ir.clone(), vi.clone())  # equal content, other tensors
        assert len(calls) == 1
        torch.testing.assert_close(again[0], first[0], atol=0, rtol=0)
        flipped = ext(ir.flip(-1), vi.flip(-1))  # another image: computed
        assert len(calls) == 2 and not torch.allclose(flipped[0], first[0])
    ext(ir, vi)
    ext(ir, vi)
    hook.remove()
    assert len(calls) == 4


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
