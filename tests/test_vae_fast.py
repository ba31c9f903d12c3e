"""The VAE's fast path against its plain one: channels-last end to end, conv rings, the
mid-block attention.

On the CPU, PyTorch's conv3d returns the standard layout whatever its operands, so the layout
tests stand in cuDNN's rule (a channels-last operand gives a channels-last output) for it; with
``-m gpu`` the same checks run on CUDA without the stand-in.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from seedvr_cli.models.vae import VideoVAE
from seedvr_cli.models.vae_config import VAEConfig

CHANNELS_LAST = torch.channels_last_3d
# Inner widths 8 and 24, apart from the widths that enter or leave the VAE (3 pixels, 16 latent,
# 32 moments): a layout change at those widths is the way in or out, anywhere else a transpose.
CONFIG = VAEConfig(block_out_channels=(8, 8, 24, 24), norm_num_groups=4, attention_head_dim=24)
BOUNDARY_WIDTHS = {3, 16, 32}


def random_vae(device: str = "cpu", dtype: torch.dtype = torch.float32) -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(CONFIG).to(device, dtype).eval().requires_grad_(False)


def layout_of(t: torch.Tensor) -> str:
    """"last" or "standard" where only one layout fits the strides, else "either"."""
    last, standard = t.is_contiguous(memory_format=CHANNELS_LAST), t.is_contiguous()
    return "last" if last and not standard else "standard" if standard and not last else "either"


class LayoutLog(TorchDispatchMode):
    """Every conv's operand layouts, and every copy that moves a 5-D tensor between layouts."""

    COPIES = {"aten.clone.default", "aten.copy_.default", "aten._to_copy.default"}

    def __init__(self) -> None:
        super().__init__()
        self.convs: list[tuple[str, str]] = []
        self.transposes: list[tuple[int, str, str]] = []  # (channels, from, to)
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if self.paused:
            return out
        if name == "aten.convolution.default":
            self.convs.append((layout_of(args[0]), layout_of(args[1])))
        elif name in self.COPIES and out.ndim == 5:
            source = args[1] if name == "aten.copy_.default" else args[0]
            moved = {layout_of(source), layout_of(out)}
            if moved == {"last", "standard"}:
                self.transposes.append((out.shape[1], layout_of(source), layout_of(out)))
        return out


class CudnnLayoutRule(TorchFunctionMode):
    """conv3d as cuDNN lays out its output: channels-last when either operand is. The stand-in's
    own relayout is not the model's doing, so ``log`` does not see it."""

    def __init__(self, log: LayoutLog) -> None:
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (F.conv3d, torch.conv3d) and "last" in (layout_of(args[0]), layout_of(args[1])):
            self.log.paused = True
            out = out.contiguous(memory_format=CHANNELS_LAST)
            self.log.paused = False
        return out


def run_logged(vae: VideoVAE, pixels: torch.Tensor, latent: torch.Tensor, on_cpu: bool) -> LayoutLog:
    """The layouts of a second encode and decode: the first lays out the weights, once."""
    log = LayoutLog()
    with torch.no_grad():
        vae.encode_moments(pixels), vae.decode(latent)
        if on_cpu:
            with CudnnLayoutRule(log), log:
                vae.encode_moments(pixels), vae.decode(latent)
        else:
            with log:
                vae.encode_moments(pixels), vae.decode(latent)
    return log


def assert_channels_last_inside(log: LayoutLog) -> None:
    assert log.convs and all(pair == ("last", "last") or "either" in pair for pair in log.convs), log.convs
    # 1x1x1 weights fit both layouts; every other weight is stored channels-last.
    assert sum(pair == ("last", "last") for pair in log.convs) > len(log.convs) // 2
    inner = [t for t in log.transposes if t[0] not in BOUNDARY_WIDTHS]
    assert not inner, f"layout copies inside the VAE: {inner}"


def test_channels_last_runs_every_conv_in_that_layout_without_transposes(one_torch_thread):
    vae = random_vae()
    vae.memory_format = CHANNELS_LAST
    pixels = torch.rand(1, 3, 9, 16, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    latent = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(2))
    assert_channels_last_inside(run_logged(vae, pixels, latent, on_cpu=True))


def test_conv_weights_follow_the_activation_layout_and_back(one_torch_thread):
    vae = random_vae()
    x = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    conv_weights = [m.weight for m in vae.modules() if isinstance(m, torch.nn.Conv3d) and m.weight.shape[-1] > 1]
    with torch.no_grad():
        plain = vae.encode_moments(x)
        assert all(layout_of(w) == "standard" for w in conv_weights)
        vae.memory_format = CHANNELS_LAST
        fast = vae.encode_moments(x)
        assert all(layout_of(w) == "last" for w in conv_weights)
        vae.memory_format = torch.contiguous_format
        again = vae.encode_moments(x)
        assert all(layout_of(w) == "standard" for w in conv_weights)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, plain, atol=0, rtol=0)


@pytest.mark.gpu
def test_gpu_channels_last_end_to_end_in_bf16():
    """On CUDA the default layout is channels-last: every conv sees it, nothing transposes."""
    vae = random_vae("cuda", torch.bfloat16)
    pixels = torch.rand(1, 3, 9, 64, 96, device="cuda", dtype=torch.bfloat16) * 2 - 1
    latent = torch.randn(1, 16, 3, 8, 12, device="cuda", dtype=torch.bfloat16)
    assert_channels_last_inside(run_logged(vae, pixels, latent, on_cpu=False))


class CopiedBytes(TorchDispatchMode):
    """Bytes written by copies (clone, copy_) of 5-D tensors: the carried frames' traffic."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if str(func) in ("aten.clone.default", "aten.copy_.default") and out.ndim == 5:
            self.total += out.numel() * out.element_size()
        return out


def sliced_pass(vae: VideoVAE, rings: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Encode and decode one frame per piece (every layer continues its sequence one frame at a
    time, as the 1080p layers do), with or without conv rings; the bytes the pass copied."""
    vae.conv_rings, vae.slice_bytes = rings, 1
    pixels = torch.rand(1, 3, 9, 16, 24, generator=torch.Generator().manual_seed(3)) * 2 - 1
    latent = torch.randn(1, 16, 4, 2, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), CopiedBytes() as copied:
        moments, decoded = vae.encode_moments(pixels), vae.decode(latent)
    return moments, decoded, copied.total


@pytest.mark.parametrize("layout", [torch.contiguous_format, CHANNELS_LAST])
def test_conv_rings_give_the_copying_path_result_and_copy_far_less(layout, one_torch_thread):
    vae = random_vae()
    vae.memory_format = layout
    ring_moments, ring_decoded, ring_copied = sliced_pass(vae, rings=True)
    moments, decoded, copied = sliced_pass(vae, rings=False)
    # Only the order of the temporal taps' sum differs.
    torch.testing.assert_close(ring_moments, moments, atol=3e-6, rtol=0)
    torch.testing.assert_close(ring_decoded, decoded, atol=1e-5, rtol=0)
    print(f"\ncopied: rings {ring_copied} bytes, copying path {copied} bytes")
    assert ring_copied < copied / 2


def test_a_ring_hands_its_frames_back_when_a_conv_leaves_one_frame_calls(one_torch_thread):
    """One frame per call (ring), then three at once (the carried frames must come out of the
    ring in time order), then one again: the same as the whole sequence in one call."""
    from seedvr_cli.models.vae import CausalCache, CausalConv3d

    torch.manual_seed(5)
    conv = CausalConv3d(4, 6, (3, 3, 3), spatial_padding=1).requires_grad_(False)
    x = torch.randn(1, 4, 9, 5, 6)
    whole = conv(x)
    cache = CausalCache()
    pieces = [conv(x[:, :, i : i + 1], cache) for i in range(4)]
    assert conv in cache.rings and conv not in cache.frames
    pieces.append(conv(x[:, :, 4:7], cache))
    assert conv not in cache.rings and conv in cache.frames
    pieces += [conv(x[:, :, i : i + 1], cache) for i in (7, 8)]
    assert cache.carried_bytes() == cache.rings[conv].buffer.numel() * 4
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("block_bytes", [2**20, 5 * 40 * 4])  # one block; blocks of 5 rows, the last shorter
def test_wide_head_attention_matches_sdpa(block_bytes, one_torch_thread):
    from seedvr_cli.models.wide_attention import wide_head_attention

    generator = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(3, 1, 37 if i == 0 else 40, 64, generator=generator) for i in range(3))
    k, v = k[:, :, :37], v[:, :, :37]
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(wide_head_attention(q, k, v, block_bytes=block_bytes), expected,
                               atol=2e-6, rtol=1e-5)


def test_vae_attention_takes_the_wide_path_on_cuda_only_when_the_fast_path_is_on(monkeypatch):
    import seedvr_cli.models.vae as vae_module

    calls = []
    monkeypatch.setattr(vae_module, "wide_head_attention", lambda q, k, v: calls.append(q.shape) or q)
    wide = torch.zeros(1, 1, 4, 512)

    class OnCuda(torch.Tensor):  # is_cuda without a GPU; nothing else is asked of it here
        @property
        def is_cuda(self):
            return True

    on_cuda = wide.as_subclass(OnCuda)
    monkeypatch.delenv("SEEDVR_KERNELS", raising=False)
    vae_module.FrameAttention._attend(on_cuda, on_cuda, on_cuda)
    assert len(calls) == 1
    monkeypatch.setenv("SEEDVR_KERNELS", "off")
    vae_module.FrameAttention._attend(on_cuda, on_cuda, on_cuda)
    vae_module.FrameAttention._attend(wide, wide, wide)
    assert len(calls) == 1


@pytest.mark.gpu
def test_gpu_wide_head_attention_matches_sdpa_at_the_mid_block_size():
    """One 1080p latent frame (136 x 240 positions), one head of 512, bf16; times both."""
    from seedvr_cli.models.wide_attention import wide_head_attention

    q, k, v = (torch.randn(1, 1, 136 * 240, 512, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    times = {}
    for name, attend in (("sdpa", F.scaled_dot_product_attention), ("wide", wide_head_attention)):
        attend(q, k, v)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        out = attend(q, k, v)
        end.record()
        torch.cuda.synchronize()
        times[name] = (begin.elapsed_time(end), out)
    print(f"\nmid-block attention, one 1080p frame: SDPA {times['sdpa'][0]:.2f} ms, wide {times['wide'][0]:.2f} ms")
    wide, sdpa = times["wide"][1].float(), times["sdpa"][1].float()
    # Both round the probabilities to bf16 before the second product, at different points.
    assert (wide - sdpa).abs().max() <= 0.02 * sdpa.abs().max()


@pytest.mark.gpu
def test_gpu_conv_rings_match_the_copying_path():
    """The real-size VAE in bf16 on CUDA, one frame per piece: rings against the copying path
    (the same pictures up to the order in which the temporal taps are summed)."""
    from seedvr_cli.models.vae_config import vae_config

    torch.manual_seed(0)
    vae = VideoVAE(vae_config("vae")).to("cuda", torch.bfloat16).eval().requires_grad_(False)
    vae.slice_bytes = 1
    latent = torch.randn(1, 16, 3, 16, 24, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        vae.conv_rings = False
        plain = vae.decode(latent).float()
        vae.conv_rings = True
        rings = vae.decode(latent).float()
    # Rounding-level: bf16 conv outputs may round differently when the taps are summed in another order.
    assert (rings - plain).abs().max() <= 0.02 * plain.abs().max()
