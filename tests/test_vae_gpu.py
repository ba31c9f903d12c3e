"""The real-size VAE on a CUDA device in bfloat16: shapes, bf16 vs fp32, and 1080p time / memory.

Random weights (the published file is not needed): GroupNorm after every conv keeps activations
in range, so the numbers say how our code behaves, not how good the pictures are.
"""

from __future__ import annotations

import time

import pytest
import torch

from seedvr_cli.models.vae import VideoVAE
from seedvr_cli.models.vae_config import vae_config

pytestmark = pytest.mark.gpu


def real_vae(dtype: torch.dtype) -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(vae_config("vae")).to("cuda", dtype).eval()


@torch.inference_mode()
def test_bf16_on_gpu_tracks_fp32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    vae32 = real_vae(torch.float32)
    x = torch.rand(1, 3, 9, 128, 192, device="cuda", generator=torch.Generator("cuda").manual_seed(1)) * 2 - 1
    mean32 = vae32.encode(x)[0]
    dec32 = vae32.decode(mean32)
    vae16 = vae32.to(torch.bfloat16)
    mean16 = vae16.encode(x.bfloat16())[0].float()
    dec16 = vae16.decode(mean32.bfloat16()).float()
    mean_err = (mean16 - mean32).abs().max().item() / mean32.abs().max().item()
    dec_err = (dec16 - dec32).abs().max().item() / dec32.abs().max().item()
    print(f"\nbf16 vs fp32 (relative to max |ref|): mean {mean_err:.3e}, decode {dec_err:.3e}")
    # Measured on an H200 (torch 2.11, random weights): mean 2.7e-2, decode 4.3e-2; ~2x margin.
    assert mean_err < 0.06 and dec_err < 0.09


@torch.inference_mode()
def test_1080p_bf16_time_and_memory():
    vae = real_vae(torch.bfloat16)
    frames, height, width = 21, 1088, 1920
    x = torch.rand(1, 3, frames, height, width, device="cuda", dtype=torch.bfloat16) * 2 - 1
    vae.encode(x[:, :, :5])  # warm-up (cuDNN algorithm choice)
    vae.decode(torch.randn(1, 16, 2, height // 8, width // 8, device="cuda", dtype=torch.bfloat16))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    mean, _ = vae.encode(x)
    torch.cuda.synchronize()
    encode_s = time.perf_counter() - start
    encode_peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    decoded = vae.decode(mean)
    torch.cuda.synchronize()
    decode_s = time.perf_counter() - start
    decode_peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    print(
        f"\n{frames}x{height}x{width} bf16 on {torch.cuda.get_device_name()}: "
        f"encode {encode_s:.2f} s ({frames / encode_s:.1f} fps, peak +{encode_peak:.1f} GiB), "
        f"decode {decode_s:.2f} s ({frames / decode_s:.1f} fps, peak +{decode_peak:.1f} GiB)"
    )
    assert mean.shape == (1, 16, 6, height // 8, width // 8)
    assert decoded.shape == x.shape
    assert torch.isfinite(decoded).all()
