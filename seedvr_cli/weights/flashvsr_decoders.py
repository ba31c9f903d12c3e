"""FlashVSR's decoder files to models: ``TCDecoder.ckpt`` (modes tiny, tiny-long) and
``Wan2.1_VAE.pth`` (mode full), both ``torch.save`` state dicts read with ``weights_only=True``.

Widths come from the files' own shapes, so the tiny test files and the published ones load the same
way. Any key that does not fit is reported in one line instead of leaving a layer at its initial
values (the reference loads ``TCDecoder.ckpt`` with ``strict=False`` and would run such a model).
Also the key layout of the whole ``Wan2.1_VAE.pth`` (encoder included), for the synthesizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from seedvr_cli.errors import CheckpointError
from seedvr_cli.models.flashvsr.tc_decoder import COND_CHANNELS, TCDecoder, TCDecoderConfig
from seedvr_cli.models.flashvsr.wan_vae import (
    AttentionBlock,
    CausalConv3d,
    ResidualBlock,
    RMSNorm,
    WanVAEConfig,
    WanVAEDecoder,
)
from seedvr_cli.weights.readers import open_checkpoint

# TCDecoder layers that may be absent from a file without harm: the two IdentityConv2d layers the
# reference inserted after a ReLU start as the identity (Dirac) and are followed by another ReLU,
# so left at their initial values they change nothing (relu(relu(x)) == relu(x)): a file without
# them is the decoder as it was before that insertion. Nothing is harmless the other way round: an
# unexpected key means a layout we do not build.
TC_OPTIONAL_KEYS = frozenset({"decoder.3.weight", "decoder.24.weight"})

# Stage widths of the TCDecoder, read from the convs that open each stage (and its input width).
_TC_WIDTH_KEYS = ("decoder.1.weight", "decoder.10.weight", "decoder.16.weight", "decoder.22.weight")

# The published VAE file holds the whole Wan2.1 VAE; FlashVSR keeps only these two parts of it.
VAE_DECODER_PREFIXES = ("conv2.", "decoder.")
VAE_ENCODER_PREFIXES = ("encoder.", "conv1.")


class LoadedTCDecoder(NamedTuple):
    model: TCDecoder
    # One line about keys that were absent but harmless (None when the file fit exactly).
    note: str | None


def _read_state(path: str | Path) -> tuple[Path, dict[str, torch.Tensor]]:
    with open_checkpoint(path) as reader:
        return reader.path, {name: tensor for name, tensor in reader.items()}


def _names(label: str, names: list[str], limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} {label} ({', '.join(sorted(names)[:limit])}{more})"


def _key_problems(expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor],
                  optional: frozenset[str] = frozenset()) -> tuple[list[str], list[str], list[str]]:  # fmt: skip
    """(missing, unexpected, wrong shape) keys of ``state`` against the model's ``expected`` shapes."""
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in state
             if k in expected and tuple(state[k].shape) != expected[k]]  # fmt: skip
    return missing, unexpected, wrong


def _mismatch_error(path: Path, what: str, missing: list[str], unexpected: list[str],
                    wrong: list[str]) -> CheckpointError:  # fmt: skip
    parts = [_names(label, names) for label, names in
             (("missing keys", missing), ("unexpected keys", unexpected), ("keys of the wrong shape", wrong)) if names]
    return CheckpointError(f"{path}: does not fit FlashVSR's {what}: {'; '.join(parts)}; "
                           f"it is not the published {what} file or it is damaged: download it again")


def tc_decoder_config_from_shapes(state: dict[str, torch.Tensor], path: Path) -> TCDecoderConfig:
    if not all(key in state for key in _TC_WIDTH_KEYS):
        absent = [key for key in _TC_WIDTH_KEYS if key not in state]
        raise CheckpointError(f"{path}: not a FlashVSR TCDecoder file (no {', '.join(absent)}); "
                              "use the TCDecoder.ckpt published with FlashVSR")
    channels = tuple(int(state[key].shape[0]) for key in _TC_WIDTH_KEYS)
    latent_channels = int(state["decoder.1.weight"].shape[1]) - COND_CHANNELS
    if latent_channels < 1:
        raise CheckpointError(f"{path}: decoder.1.weight takes {state['decoder.1.weight'].shape[1]} input channels, "
                              "fewer than the 768 of the LQ condition: not a FlashVSR TCDecoder file")
    return TCDecoderConfig(channels=channels, latent_channels=latent_channels)


def load_tc_decoder(path: str | Path, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> LoadedTCDecoder:  # fmt: skip
    """``TCDecoder.ckpt`` as a TCDecoder; every key must fit except ``TC_OPTIONAL_KEYS``."""
    path, state = _read_state(path)
    model = TCDecoder(tc_decoder_config_from_shapes(state, path))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected, wrong = _key_problems(expected, state, TC_OPTIONAL_KEYS)
    if missing or unexpected or wrong:
        raise _mismatch_error(path, "TCDecoder", missing, unexpected, wrong)
    model.load_state_dict(state, strict=False)
    absent = sorted(TC_OPTIONAL_KEYS - state.keys())
    note = None
    if absent:
        note = (f"{path}: has no {', '.join(absent)}; those identity layers keep their identity start, "
                "which changes nothing (each is followed by a ReLU after a ReLU)")
    return LoadedTCDecoder(model.to(device=device, dtype=dtype).eval(), note)


def _vae_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """File keys as the file stores them: without the ``model.`` prefix DiffSynth adds when it loads."""
    if state and all(key.startswith("model.") for key in state):
        return {key.removeprefix("model."): value for key, value in state.items()}
    return state


def wan_vae_config_from_shapes(state: dict[str, torch.Tensor], path: Path) -> WanVAEConfig:
    for key in ("decoder.head.0.gamma", "conv2.weight"):
        if key not in state:
            raise CheckpointError(f"{path}: not a Wan2.1 VAE file (no {key}); use Wan2.1_VAE.pth as published "
                                  "with FlashVSR or Wan2.1")
    try:
        return WanVAEConfig(dim=int(state["decoder.head.0.gamma"].shape[0]), z_dim=int(state["conv2.weight"].shape[0]))
    except ValueError as err:
        raise CheckpointError(f"{path}: not the Wan2.1 VAE FlashVSR uses: {err}") from None


def load_wan_vae_decoder(path: str | Path, *, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> WanVAEDecoder:  # fmt: skip
    """The decoder half of ``Wan2.1_VAE.pth`` (strict); its encoder keys are read and dropped."""
    path, state = _read_state(path)
    state = _vae_state(state)
    model = WanVAEDecoder(wan_vae_config_from_shapes(state, path))
    decoder_state = {k: v for k, v in state.items() if not k.startswith(VAE_ENCODER_PREFIXES)}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected, wrong = _key_problems(expected, decoder_state)
    if missing or unexpected or wrong:
        raise _mismatch_error(path, "Wan2.1 VAE", missing, unexpected, wrong)
    model.load_state_dict(decoder_state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


# ----------------------------------------------------------------------------- file layouts


class _Downsampler(nn.Module):
    """Key holder for the encoder's downsampler (``resample.1`` a stride-2 conv, ``time_conv`` when it
    also halves time); the encoder is never run, only its layout is written."""

    def __init__(self, channels: int, *, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(channels, channels, 3, stride=2))
        if temporal:
            self.time_conv = CausalConv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1))


def _encoder_layout(config: WanVAEConfig) -> nn.Module:
    dims = config.encoder_dims
    encoder = nn.Module()
    encoder.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
    layers: list[nn.Module] = []
    last_stage = len(config.dim_mult) - 1
    for stage, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(config.num_res_blocks):
            layers.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if stage != last_stage:
            layers.append(_Downsampler(out_dim, temporal=config.temporal_downsample[stage]))
    encoder.downsamples = nn.Sequential(*layers)
    width = dims[-1]
    encoder.middle = nn.Sequential(ResidualBlock(width, width), AttentionBlock(width), ResidualBlock(width, width))
    # Mean and log-variance of every latent channel.
    encoder.head = nn.Sequential(RMSNorm(width, images=False), nn.SiLU(),
                                 CausalConv3d(width, 2 * config.z_dim, 3, padding=1))  # fmt: skip
    return encoder


def wan_vae_file_shapes(config: WanVAEConfig) -> dict[str, tuple[int, ...]]:
    """Every key of ``Wan2.1_VAE.pth`` with its shape: encoder, ``conv1``, ``conv2``, decoder."""
    with torch.device("meta"):
        encoder = _encoder_layout(config)
        conv1 = CausalConv3d(2 * config.z_dim, 2 * config.z_dim, 1)
        decoder = WanVAEDecoder(config)
    shapes = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    shapes.update({f"conv1.{k}": tuple(v.shape) for k, v in conv1.state_dict().items()})
    shapes.update({k: tuple(v.shape) for k, v in decoder.state_dict().items()})
    return shapes


def tc_decoder_file_shapes(config: TCDecoderConfig) -> dict[str, tuple[int, ...]]:
    """Every key of ``TCDecoder.ckpt`` with its shape (the module's, as the published file is
    expected to hold; see TC_OPTIONAL_KEYS)."""
    with torch.device("meta"):
        model = TCDecoder(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
