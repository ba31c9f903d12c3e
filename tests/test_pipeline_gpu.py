"""The per-chunk pipeline on a CUDA device: same frames as the CPU path, and colour-phase cost at 1080p."""

from __future__ import annotations

import time

import pytest
import torch

from seedvr_cli.pipeline.window import WindowSettings, upscale_window
from seedvr_cli.pipeline.color import COLOR_METHODS, color_correct
from seedvr_cli.pipeline.condition import window_noise
from seedvr_cli.pipeline.plan import plan_frame_size
from seedvr_cli.pipeline.temporal import plan_windows

pytestmark = pytest.mark.gpu


def standin_dit(vid, txt, vid_shape, txt_shape, timestep):
    return vid[:, :16] - (0.8 * vid[:, 16:32] + 0.1)


def tiny_vae(device: str, dtype: torch.dtype):
    from seedvr_cli.models.vae import VideoVAE
    from seedvr_cli.models.vae_config import vae_config

    torch.manual_seed(0)
    return VideoVAE(vae_config("tiny-vae")).to(device, dtype).eval()


def test_window_noise_is_the_same_on_every_device():
    assert torch.equal(window_noise(42, 21, (3, 4, 5, 16), "cuda").cpu(), window_noise(42, 21, (3, 4, 5, 16)))


def test_chunk_on_gpu_matches_cpu():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 65536, (9, 24, 40, 4), generator=gen, dtype=torch.int32).to(torch.uint16)
    size = plan_frame_size(24, 40, resolution=48)
    window = plan_windows(7, batch_size=9).windows[0]
    results = {}
    for device in ("cpu", "cuda"):
        settings = WindowSettings(frame_size=size, dtype=torch.float32, output_dtype=torch.uint16, latent_noise_scale=0.2)
        results[device] = upscale_window(frames.to(device), vae=tiny_vae(device, torch.float32), dit=standin_dit,
                                        text_embedding=torch.zeros(58, 5120), settings=settings, window=window).cpu()
    assert results["cuda"].shape == (7, 48, 80, 4) and results["cuda"].dtype == torch.uint16
    diff = (results["cuda"].to(torch.int32) - results["cpu"].to(torch.int32)).abs()
    print(f"\ncuda vs cpu fp32, uint16 levels: max {int(diff.max())}, mean {float(diff.float().mean()):.3f}")
    assert int(diff[..., :3].max()) <= 64  # 1e-3 of full scale


def test_bf16_chunk_runs_on_gpu():
    frames = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8, device="cuda")
    size = plan_frame_size(32, 32, resolution=64)
    settings = WindowSettings(frame_size=size, dtype=torch.bfloat16)
    out = upscale_window(frames, vae=tiny_vae("cuda", torch.bfloat16), dit=standin_dit,
                        text_embedding=torch.zeros(58, 5120), settings=settings, window=plan_windows(5, batch_size=5).windows[0])
    assert out.shape == (5, 64, 64, 3) and out.device.type == "cuda"


@torch.inference_mode()
def test_color_correction_cost_at_1080p():
    gen = torch.Generator("cuda").manual_seed(0)
    content = torch.rand(21, 3, 1080, 1920, device="cuda", generator=gen) * 2 - 1
    style = (content + 0.05 * torch.randn(content.shape, device="cuda", generator=gen)).clamp(-1, 1)
    lines = []
    for method in COLOR_METHODS:
        color_correct(content[:2], style[:2], method)
        torch.cuda.synchronize()
        began = time.perf_counter()
        out = color_correct(content, style, method)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - began) * 1000 / content.shape[0]
        lines.append(f"{method}: {ms:.2f} ms/frame")
        assert torch.isfinite(out).all()
    print("\n1080p colour correction, 21 frames: " + ", ".join(lines))
    small_c, small_s = content[:2, :, :96, :128], style[:2, :, :96, :128]
    for method in ("wavelet", "adain"):
        gpu = color_correct(small_c, small_s, method).cpu()
        cpu = color_correct(small_c.cpu(), small_s.cpu(), method)
        assert (gpu - cpu).abs().max() < 1e-4, method
