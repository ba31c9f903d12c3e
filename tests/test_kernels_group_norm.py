"""The per-frame GroupNorm (+ SiLU) Triton kernel against its PyTorch reference, and its dispatch.

Without a GPU the kernel runs in Triton's interpreter, on tensors small enough to take a second
or so. Triton reads ``TRITON_INTERPRET`` when its own library functions are defined, so it is set
here before anything imports Triton (nothing in seedvr_cli does on a CPU-only machine).
With ``-m gpu`` the kernel runs compiled on CUDA at VAE-like sizes.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

import seedvr_kernels.dispatch as dispatch
from seedvr_cli.memory.tiling import TiledVAE
from seedvr_cli.models.vae import FrameGroupNorm, VideoVAE
from seedvr_cli.models.vae_config import vae_config

INTERPRET = not torch.cuda.is_available()
if INTERPRET and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="Triton is not installed on this platform")
import seedvr_kernels.frame_group_norm as kernels  # noqa: E402


@pytest.fixture(scope="module")
def interpreted():
    if not INTERPRET:
        pytest.skip("a CUDA device is present: the compiled kernel is tested instead (-m gpu)")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton was imported before this module could select its interpreter")
    return kernels


def norm_params(channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return 1 + 0.2 * torch.randn(channels, generator=generator), 0.2 * torch.randn(channels, generator=generator)


def activations(shape, dtype, layout, seed: int, offset: float = 0.0, device="cpu") -> torch.Tensor:
    """Random activations with per-channel offsets (``offset`` large: a mean far above the spread)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator) * (0.5 + torch.rand(shape[1], 1, 1, 1, generator=generator))
    x = x + offset + torch.randn(shape[1], 1, 1, 1, generator=generator)
    return x.to(device=device, dtype=dtype).contiguous(memory_format=layout)


# Tolerances against the float32 reference rounded to the same dtype: the kernel and the reference
# each round once, so they differ by at most a unit or two in the last place (bf16: 2^-8 relative).
TOLERANCE = {torch.float32: (2e-5, 2e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", [torch.channels_last_3d, torch.contiguous_format])
@pytest.mark.parametrize("silu", [True, False])
def test_interpreted_kernel_matches_reference(interpreted, dtype, layout, silu, one_torch_thread):
    # 24 channels: not a power of two, so the channel mask matters; 7x9 pixels: partial tiles.
    shape, groups = (2, 24, 3, 7, 9), 4
    weight, bias = norm_params(24, seed=1)
    x = activations(shape, dtype, layout, seed=2)
    got = interpreted.group_norm_silu_triton(x, weight, bias, groups, 1e-6, silu=silu)
    expected = interpreted.group_norm_silu_reference(x, weight, bias, groups, 1e-6, silu=silu)
    atol, rtol = TOLERANCE[dtype]
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=atol, rtol=rtol)


# The masked lanes of the last tile compute silu(shift), shift ~ -300: exp overflows there, harmlessly.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_interpreted_kernel_merges_runs_and_keeps_a_large_mean(interpreted, monkeypatch, one_torch_thread):
    """Many programs per frame (each a run of 4 pixels, the last one shorter) merged per group, on
    data whose mean is 300 spreads: E[x^2] - E[x]^2 in float32 would lose the variance."""
    monkeypatch.setattr(interpreted, "_STATS_TILE", 32)  # 4 pixels x 8 channels per tile
    monkeypatch.setattr(interpreted, "_STATS_PROGRAMS", 64)
    weight, bias = norm_params(8, seed=3)
    x = activations((1, 8, 2, 5, 7), torch.float32, torch.channels_last_3d, seed=4, offset=300.0)
    got = interpreted.group_norm_silu_triton(x, weight, bias, 2, 1e-6)
    expected = interpreted.group_norm_silu_reference(x.double(), weight.double(), bias.double(), 2, 1e-6).float()
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)


def test_interpreted_kernel_writes_into_a_padded_buffer_view(interpreted, one_torch_thread):
    """The VAE writes the activation into the body of a conv's padded input: only the view
    changes, the head frames and the padding around it are left as they were."""
    weight, bias = norm_params(16, seed=5)
    x = activations((1, 16, 2, 6, 5), torch.bfloat16, torch.channels_last_3d, seed=6)
    padded = torch.full((1, 16, 4, 7, 6), 7.0, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    body = padded[:, :, 2:, :6, :5]
    interpreted.group_norm_silu_triton(x, weight, bias, 4, 1e-6, out=body)
    torch.testing.assert_close(body, interpreted.group_norm_silu_reference(x, weight, bias, 4, 1e-6),
                               atol=1.6e-2, rtol=1.6e-2)
    outside = torch.ones_like(padded, dtype=torch.bool)
    outside[:, :, 2:, :6, :5] = False
    assert (padded[outside] == 7.0).all()


@pytest.mark.parametrize("tiled", [False, True])
def test_interpreted_kernel_inside_the_vae_gives_the_plain_pictures(interpreted, monkeypatch, tiled, one_torch_thread):
    """The VAE routed through the kernel (as on a GPU that has it) decodes and encodes what its
    own PyTorch path does, sliced and channels-last as on CUDA, whole or in overlapping tiles
    (the tiles are views into the frame: the kernel follows their strides)."""
    torch.manual_seed(0)
    vae = VideoVAE(vae_config("tiny-vae")).eval()
    vae.memory_format = torch.channels_last_3d
    # Tiles on their own statistics: given shared ones, a norm does not run the kernel.
    codec = TiledVAE(vae, tile_size=(16, 16), tile_overlap=(8, 8), shared_statistics=False) if tiled else vae
    # 16x24 pixels, 2x3 latents: two overlapping tiles each way when tiled.
    z = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(7))
    x = torch.rand(1, 3, 5, 16, 24, generator=torch.Generator().manual_seed(8)) * 2 - 1
    with torch.no_grad():
        plain_pixels, plain_mean = codec.decode(z), codec.encode(x)[0]
        calls = []

        def kernel(*args, **kwargs):
            calls.append(kwargs["silu"])
            return interpreted.group_norm_silu_triton(*args, **kwargs)

        monkeypatch.setattr("seedvr_cli.models.vae.fast_group_norm", lambda device: kernel)
        fast_pixels, fast_mean = codec.decode(z), codec.encode(x)[0]
    assert True in calls and False in calls  # ResNet norms and the attention's plain norm
    torch.testing.assert_close(fast_pixels, plain_pixels, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast_mean, plain_mean, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_interpreted_kernel_rounding_the_norm_matches_its_reference(interpreted, dtype, one_torch_thread):
    weight, bias = norm_params(24, seed=13)
    x = activations((1, 24, 2, 7, 9), dtype, torch.channels_last_3d, seed=14)
    got = interpreted.group_norm_silu_triton(x, weight, bias, 4, 1e-6, round_norm=True)
    expected = interpreted.group_norm_silu_reference(x, weight, bias, 4, 1e-6, round_norm=True)
    torch.testing.assert_close(got, expected, atol=TOLERANCE[dtype][0], rtol=TOLERANCE[dtype][1])


def test_interpreted_kernel_rounding_the_norm_agrees_with_the_pytorch_path_far_more_often(interpreted,
                                                                                          one_torch_thread):
    """In half precision the PyTorch path rounds the norm before the SiLU; the kernel told to do
    the same differs from it only where the two statistics' last bits round a value differently.
    float16, not bfloat16: Triton's interpreter truncates to bfloat16 where the GPU rounds."""
    norm = FrameGroupNorm(8, 64, eps=1e-6).to(torch.float16).requires_grad_(False)
    norm.weight.copy_(norm_params(64, seed=15)[0])
    norm.bias.copy_(norm_params(64, seed=15)[1])
    x = activations((1, 64, 2, 16, 24), torch.float16, torch.channels_last_3d, seed=16)
    plain = torch.empty_like(x)
    norm.silu_into(x, plain)  # on the CPU: the PyTorch path
    differing = {}
    for round_norm in (False, True):
        fast = interpreted.group_norm_silu_triton(x, norm.weight, norm.bias, 8, 1e-6, round_norm=round_norm)
        differing[round_norm] = (fast != plain).float().mean().item()
    assert differing[True] < differing[False] / 4, differing


def test_interpreted_kernel_through_frame_group_norm_rounds_as_the_pytorch_path(interpreted, monkeypatch,
                                                                                 one_torch_thread):
    """FrameGroupNorm's fast path (the kernel, as on a GPU that has it) gives the PyTorch path's
    float16 values but for a few elements in a thousand."""
    norm = FrameGroupNorm(8, 64, eps=1e-6).to(torch.float16).requires_grad_(False)
    norm.bias.copy_(norm_params(64, seed=17)[1])
    x = activations((1, 64, 2, 16, 24), torch.float16, torch.channels_last_3d, seed=18)
    plain, fast = torch.empty_like(x), torch.empty_like(x)
    norm.silu_into(x, plain)
    monkeypatch.setattr("seedvr_cli.models.vae.fast_group_norm", lambda device: interpreted.group_norm_silu_triton)
    norm.silu_into(x, fast)
    assert (fast != plain).float().mean().item() < 0.005


def test_dispatch_keeps_the_pytorch_path_on_the_cpu_and_when_switched_off(monkeypatch):
    monkeypatch.delenv(dispatch.KERNELS_ENV, raising=False)
    assert dispatch.fast_group_norm(torch.device("cpu")) is None
    monkeypatch.setattr(dispatch.torch.cuda, "get_device_capability", lambda index: (9, 0))
    dispatch._choose_group_norm.cache_clear()
    assert dispatch.fast_group_norm(torch.device("cuda", 0)) is not None
    monkeypatch.setenv(dispatch.KERNELS_ENV, "off")
    assert dispatch.fast_group_norm(torch.device("cuda", 0)) is None
    dispatch._choose_group_norm.cache_clear()


def test_dispatch_falls_back_before_hopper_with_one_note(monkeypatch, capsys):
    monkeypatch.delenv(dispatch.KERNELS_ENV, raising=False)
    monkeypatch.setattr(dispatch.torch.cuda, "get_device_capability", lambda index: (8, 6))
    dispatch._choose_group_norm.cache_clear()
    assert dispatch.fast_group_norm(torch.device("cuda", 0)) is None
    assert dispatch.fast_group_norm(torch.device("cuda", 0)) is None
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "sm_86" in note[0] and "SEEDVR_KERNELS=on" in note[0]
    monkeypatch.setenv(dispatch.KERNELS_ENV, "on")
    assert dispatch.fast_group_norm(torch.device("cuda", 0)) is not None
    dispatch._choose_group_norm.cache_clear()


def test_dispatch_without_triton_notes_and_falls_back(monkeypatch, capsys):
    monkeypatch.delenv(dispatch.KERNELS_ENV, raising=False)
    monkeypatch.setattr(dispatch.importlib.util, "find_spec", lambda name: None)
    dispatch._choose_group_norm.cache_clear()
    assert dispatch.fast_group_norm(torch.device("cuda", 0)) is None
    assert "Triton is not installed" in capsys.readouterr().err
    dispatch._choose_group_norm.cache_clear()


def test_unknown_setting_counts_as_auto_with_a_note(monkeypatch, capsys):
    monkeypatch.setenv(dispatch.KERNELS_ENV, "fast")
    assert dispatch.kernels_setting() == "auto"
    assert "SEEDVR_KERNELS='fast'" in capsys.readouterr().err


# --- on a CUDA device: compiled kernels at VAE-like sizes -------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 128, 3, 272, 480), (1, 512, 2, 68, 120), (1, 256, 1, 135, 241)])
def test_gpu_kernel_matches_reference(dtype, shape):
    module = kernels
    weight, bias = (t.cuda() for t in norm_params(shape[1], seed=9))
    x = activations(shape, dtype, torch.channels_last_3d, seed=10, device="cuda")
    for silu in (True, False):
        got = module.group_norm_silu_triton(x, weight, bias, 32, 1e-6, silu=silu)
        expected = module.group_norm_silu_reference(x, weight, bias, 32, 1e-6, silu=silu)
        atol, rtol = TOLERANCE[dtype]
        torch.testing.assert_close(got, expected, atol=atol, rtol=rtol)


@pytest.mark.gpu
def test_gpu_frame_group_norm_uses_the_kernel_and_matches_the_pytorch_path(monkeypatch):
    """FrameGroupNorm on CUDA (kernel) against the same module with SEEDVR_KERNELS=off."""
    # Parameters without grad, as the loader's models have: the PyTorch path writes into `out`.
    norm = FrameGroupNorm(32, 256, eps=1e-6).cuda().to(torch.bfloat16).requires_grad_(False)
    norm.weight.copy_(norm_params(256, seed=11)[0])
    x = activations((1, 256, 2, 136, 240), torch.bfloat16, torch.channels_last_3d, seed=12, device="cuda")
    monkeypatch.delenv(dispatch.KERNELS_ENV, raising=False)
    assert dispatch.fast_group_norm(x.device) is not None
    fast = torch.empty_like(x)
    norm.silu_into(x, fast)
    monkeypatch.setenv(dispatch.KERNELS_ENV, "off")
    plain = torch.empty_like(x)
    norm.silu_into(x, plain)
    # Both round the norm to bf16 before the SiLU (kernel_rounds_norm); their statistics differ in the last bits.
    torch.testing.assert_close(fast.float(), plain.float(), atol=3e-2, rtol=3e-2)
