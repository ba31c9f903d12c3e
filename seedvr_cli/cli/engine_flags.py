"""Which flags belong to which engine, and the FlashVSR settings from the flags.

``seedvr upscale`` drives two engines: SeedVR2 (the default) and FlashVSR (``--model
flashvsr-...``). A flag of one engine given on the command line while the other one is chosen is
refused in one line instead of being silently ignored. Flags the engines share (``--scale``,
``--seed``, ``--dit-tiling``, ``--dit-tile-size``, ``--dit-tile-overlap``, ``--vae-tiling``) take
FlashVSR's own defaults and units when they are not given (tiles in input pixels, as the node).
"""

from __future__ import annotations

import typer

from seedvr_cli.config import FlashVSRSettings
from seedvr_cli.errors import UsageError
from seedvr_cli.pipeline.flashvsr import choices as fv

# Parameter names (as in ``cli.upscale.upscale``) of flags only one engine reads.
SEEDVR2_ONLY = ("vae", "resolution", "max_resolution", "batch_size", "temporal_overlap", "prepend_frames",
                "color_correction", "input_noise_scale", "latent_noise_scale", "blocks_to_swap",
                "swap_io_components", "dit_offload_device", "vae_offload_device", "vae_tile_size",
                "vae_tile_overlap", "vae_tile_statistics", "chunk_windows")
FLASHVSR_ONLY = ("sparse_ratio", "kv_ratio", "local_range", "color_fix", "segment_frames", "segment_overlap")
FLASHVSR_NAMES = ", ".join(fv.FLASHVSR_MODELS)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether flag ``name`` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    # Compared by name: Typer may bring its own copy of click and with it another enum class.
    return source is not None and source.name != "DEFAULT"


def _flag(ctx: typer.Context, name: str) -> str:
    param = next(p for p in ctx.command.params if p.name == name)
    value = ctx.params.get(name)
    # --no-color-fix is the spelling a user gives when switching it off.
    if value is False and getattr(param, "secondary_opts", None):
        return param.secondary_opts[0]
    return param.opts[0]


def check_engine_flags(ctx: typer.Context, model: str) -> None:
    """Refuse, in one line, a flag of the engine that ``model`` does not use."""
    flashvsr = fv.find_flashvsr_model(model) is not None
    foreign = SEEDVR2_ONLY if flashvsr else FLASHVSR_ONLY
    for name in foreign:
        if given(ctx, name):
            flag = _flag(ctx, name)
            if flashvsr:
                raise UsageError(f"{flag} is a SeedVR2 setting and --model {model} is FlashVSR: leave {flag} out "
                                 "(FlashVSR's own settings are in `seedvr upscale --help` under FlashVSR)")
            raise UsageError(f"{flag} is a FlashVSR setting and --model {model} is SeedVR2: leave {flag} out, or "
                             f"choose a FlashVSR model ({FLASHVSR_NAMES})")


def flashvsr_settings(ctx: typer.Context, flags: dict) -> FlashVSRSettings:
    """FlashVSR's settings from the flags (shared flags that were not given keep FlashVSR's defaults)."""
    scale = flags["scale"]
    if scale is not None and not float(scale).is_integer():
        raise UsageError(f"--scale {scale}: FlashVSR upscales by a whole factor, "
                         f"{', '.join(map(str, fv.SCALES))}")
    return FlashVSRSettings(
        scale=fv.DEFAULT_SCALE if scale is None else int(scale),
        sparse_ratio=flags["sparse_ratio"], kv_ratio=flags["kv_ratio"], local_range=flags["local_range"],
        color_fix=flags["color_fix"], seed=flags["seed"] if given(ctx, "seed") else 0,
        tiled_dit=flags["dit_tiling"] == "on" if given(ctx, "dit_tiling") else fv.DEFAULT_TILED_DIT,
        tile_size=flags["dit_tile_size"] if given(ctx, "dit_tile_size") else fv.DEFAULT_TILE_SIZE,
        tile_overlap=flags["dit_tile_overlap"] if given(ctx, "dit_tile_overlap") else fv.DEFAULT_TILE_OVERLAP,
        tiled_vae=flags["vae_tiling"] != "off" if given(ctx, "vae_tiling") else fv.DEFAULT_TILED_VAE,
        segment_frames=flags["segment_frames"], segment_overlap=flags["segment_overlap"],
    )
