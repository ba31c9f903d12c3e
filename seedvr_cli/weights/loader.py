"""Checkpoint file -> ready model: build on the meta device, swap in compressed Linear layers,
``load_state_dict(assign=True)`` one tensor per key straight onto the target device.

What happens to each tensor:
- fp8 Linear weights stay fp8 (``Fp8Linear`` upcasts per call) unless ``keep_fp8=False``;
- GGUF-packed Linear weights stay packed (``GGUFLinear`` dequantizes per call) unless ``keep_gguf=False``;
- everything else (fp32/fp16/bf16 files, biases, norm and modulation vectors, fp8 or packed
  non-Linear tensors) is converted once to the compute dtype on the target device.
The rope frequency buffers are accepted under their published names and recomputed in float32 by
the model itself (fp8 files store them destroyed).

Host memory stays near one copy of the file: tensors come from memory maps one at a time and go to
the device immediately.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from seedvr_cli.errors import CheckpointError
from seedvr_cli.models.dit import NaDiT
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.models.vae import VideoVAE, normalize_vae_keys
from seedvr_cli.models.vae_config import vae_config
from seedvr_cli.weights.detect import ROPE_BUFFER, CheckpointInfo, classify, inspect_checkpoint, require_kind
from seedvr_cli.weights.quantized import Fp8Linear, GGUFLinear, choose_fp8_matmul, replace_module
from seedvr_cli.weights.readers import CheckpointReader, GGUFTensor, open_checkpoint

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

__all__ = ["CheckpointInfo", "Placement", "check_checkpoint", "inspect_checkpoint", "load_dit", "load_vae",
           "load_into"]

# Where each tensor of a model goes, by its state-dict name: the seam for keeping some blocks in
# host memory (BlockSwap) while the rest lives on the GPU. ``None`` puts every tensor on ``device``.
Placement = Callable[[str], "torch.device | str"]


def load_dit(path: str | Path, *, device: torch.device | str = "cpu", compute_dtype: torch.dtype = torch.bfloat16,
             keep_fp8: bool = True, keep_gguf: bool = True, attention_backend: str = "sdpa",
             placement: Placement | None = None):
    """A ready (eval, no grad) ``NaDiT`` from any published DiT file (.safetensors, .pth, .gguf);
    ``placement`` may put some tensors elsewhere than ``device``."""
    with open_checkpoint(path) as reader:
        info = _identify(reader, "dit")
        with torch.device("meta"):
            model = NaDiT(dit_config(info.variant), attention_backend=attention_backend)
        load_into(model, reader, device=device, dtype=compute_dtype, keep_fp8=keep_fp8, keep_gguf=keep_gguf,
                  placement=placement)
    if choose_fp8_matmul(torch.device(device)):
        for module in model.modules():
            if isinstance(module, Fp8Linear):
                module.use_scaled_mm = True
    model.compute_dtype = compute_dtype
    model.checkpoint_info = info
    return model.eval()


def load_vae(path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
             placement: Placement | None = None):
    """A ready (eval, no grad) ``VideoVAE`` from a VAE file; every tensor in ``dtype``."""
    with open_checkpoint(path) as reader:
        info = _identify(reader, "vae")
        with torch.device("meta"):
            model = VideoVAE(vae_config(info.variant))
        load_into(model, reader, device=device, dtype=dtype, keep_fp8=False, keep_gguf=False,
                  renames=_vae_renames(reader), placement=placement)
    model.checkpoint_info = info
    return model.eval()


def _identify(reader: CheckpointReader, kind: str) -> CheckpointInfo:
    return require_kind(classify(reader.path, reader.infos, reader.metadata), kind)


def check_checkpoint(path: str | Path, kind: str) -> CheckpointInfo:
    """What ``path`` is, once it is known to hold every tensor the ``kind`` ("dit" or "vae") model
    it looks like needs, in the right shapes; from the header alone (no tensor data is read).

    The same check runs again when a worker loads the file; run here first, in the parent, a bad
    file costs one line instead of a model load per device and a retry."""
    with open_checkpoint(path) as reader:
        info = _identify(reader, kind)
        with torch.device("meta"):
            model = NaDiT(dit_config(info.variant)) if kind == "dit" else VideoVAE(vae_config(info.variant))
        renames = _vae_renames(reader) if kind == "vae" else {n: n for n in reader.names()}
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()
                    if name in renames or not ROPE_BUFFER.match(name)}  # fmt: skip
        _check_names_and_shapes(reader, expected, renames, f"SeedVR2 {kind.upper()} {info.variant}")
        return replace(info, container=reader.container)


def _vae_renames(reader: CheckpointReader) -> dict[str, str]:
    """Our VAE names -> the file's: old diffusers attention names map onto ours, on names only."""
    return {new: old for new, old in normalize_vae_keys({n: n for n in reader.names()}).items()}


def load_into(model: nn.Module, reader: CheckpointReader, *, device: torch.device | str, dtype: torch.dtype,
              keep_fp8: bool, keep_gguf: bool,
              renames: dict[str, str] | None = None, placement: Placement | None = None) -> nn.Module:
    """Fill a meta-device ``model`` from ``reader``, each tensor on ``placement(name)`` (default:
    ``device``); raises CheckpointError naming missing, unexpected and mis-shaped tensors."""
    device = torch.device(device)
    place_of = (lambda name: device) if placement is None else (lambda name: torch.device(placement(name)))
    model.requires_grad_(False)
    renames = renames or {n: n for n in reader.names()}
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    # The rope frequency buffers are recomputed from their formula whatever the file holds, so a
    # file without them (some conversions drop buffers) is complete; a placeholder stands in.
    placeholders = {n: torch.zeros(shape, device=place_of(n)) for n, shape in expected.items()
                    if n not in renames and ROPE_BUFFER.match(n)}  # fmt: skip
    _check_names_and_shapes(reader, {n: s for n, s in expected.items() if n not in placeholders}, renames)

    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    state: dict[str, torch.Tensor] = dict(placeholders)
    for name, source in renames.items():
        tensor = reader.get(source)
        owner, _, leaf = name.rpartition(".")
        linear_weight = leaf == "weight" and owner in linears
        target = place_of(name)
        state[name] = _place(model, tensor, owner if linear_weight else None, linears, target, dtype,
                             keep_fp8=keep_fp8, keep_gguf=keep_gguf)  # fmt: skip
        if target.type != "cpu":
            reader.release(source)  # its bytes are on the device now: keep host RSS near one tensor
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        listing = [text for text in (_listing("missing tensors", missing),
                                     _listing("unexpected tensors", unexpected)) if text]  # fmt: skip
        raise CheckpointError(f"{reader.path}: {'; '.join(listing)}")
    leftovers = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftovers:
        raise CheckpointError(f"{reader.path}: tensors left unloaded: {', '.join(leftovers[:5])}")
    return model


def _place(model: nn.Module, tensor, linear_name: str | None, linears: dict[str, nn.Linear], device: torch.device,
           dtype: torch.dtype, *, keep_fp8: bool, keep_gguf: bool) -> torch.Tensor:
    """Put one file tensor on ``device`` in its in-memory form, swapping its Linear if it stays compressed."""
    if isinstance(tensor, GGUFTensor):
        if keep_gguf and linear_name is not None:
            replace_module(model, linear_name, GGUFLinear.like(linears[linear_name], tensor.qtype))
            return tensor.data.to(device)
        return tensor.to(device).dequantize(dtype)
    if tensor.dtype in FP8_DTYPES and keep_fp8 and linear_name is not None:
        replace_module(model, linear_name, Fp8Linear.like(linears[linear_name]))
        return tensor.to(device)
    if tensor.is_floating_point():
        # Move first, convert on the device: the host never holds a converted copy.
        return tensor.to(device).to(dtype)
    return tensor.to(device)


def _check_names_and_shapes(reader: CheckpointReader, expected: dict[str, tuple], renames: dict[str, str],
                            model: str = "the model it looks like") -> None:
    missing = [n for n in expected if n not in renames]
    unexpected = [src for new, src in renames.items() if new not in expected]
    wrong = [f"{src} {tuple(reader.infos[src].shape)} (expected {expected[new]})" for new, src in renames.items()
             if new in expected and tuple(reader.infos[src].shape) != expected[new]]  # fmt: skip
    problems = [text for text in (_listing("missing tensors", missing), _listing("unexpected tensors", unexpected),
                                  _listing("tensors of the wrong shape", wrong)) if text]  # fmt: skip
    if problems:
        raise CheckpointError(f"{reader.path}: does not fit the {model}: {'; '.join(problems)}; "
                              "the file is incomplete or not a SeedVR2 checkpoint: download it again")


def _listing(label: str, names: list[str], limit: int = 3) -> str:
    if not names:
        return ""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} {label} ({', '.join(names[:limit])}{more})"


def load_state_dict(path: str | Path, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a file as a plain tensor (GGUF dequantized), optionally converted; for tools
    and tests, not for loading models (it materializes everything)."""
    out = {}
    with open_checkpoint(path) as reader:
        for name, tensor in reader.items():
            if isinstance(tensor, GGUFTensor):
                tensor = tensor.dequantize(dtype or torch.float32)
            out[name] = tensor.to(device=device, dtype=dtype) if dtype and tensor.is_floating_point() else tensor.to(device)
    return out

