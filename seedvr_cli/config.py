"""Settings of one ``seedvr upscale`` run, as plain dataclasses the CLI fills and the run reads.

``JobSpec`` is the whole request; its parts group what changes pixels (``ProcessSettings``,
``ModelSettings``) apart from what only changes how the work is run (``RunSettings``,
``MemorySettings``) or written (``media.settings.OutputSettings``). The resume fingerprint is built
from the pixel-changing parts.

This module is the one home of the defaults (the CLI's flags take theirs from these fields) and of
the rules a flag value must follow: each dataclass checks its own fields when it is built, so a
bad value fails before any file is touched, with a message naming the flag.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from seedvr_cli.errors import UsageError
from seedvr_cli.media.settings import OutputSettings
from seedvr_cli.pipeline.choices import ATTENTION_CHOICES, COLOR_METHODS, DEFAULT_COLOR_METHOD, DTYPE_CHOICES
from seedvr_cli.pipeline.flashvsr import choices as fv

DEFAULT_MODEL = "seedvr2_ema_3b_fp16.safetensors"
DEFAULT_VAE = "ema_vae_fp16.safetensors"


@dataclass(frozen=True)
class ModelSettings:
    """Which networks run, in which precision. Names are registry entries or file paths."""

    model: str = DEFAULT_MODEL
    vae: str = DEFAULT_VAE
    text_embedding: str | None = None
    model_dir: str | None = None
    dtype: str = "auto"
    download: bool = True
    # How the DiT runs, not what it computes (so neither is part of the resume key).
    attention: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPE_CHOICES:
            raise UsageError(f"--dtype {self.dtype}: use auto, {', '.join(DTYPE_CHOICES)}")
        if self.attention not in ATTENTION_CHOICES:
            raise UsageError(f"--attention {self.attention}: use {', '.join(ATTENTION_CHOICES)}")


def nearest_valid_batch_sizes(value: int) -> tuple[int, ...]:
    below = 4 * ((value - 1) // 4) + 1
    return (below, below + 4) if below >= 1 else (1,)


def check_batch_size(batch_size: int) -> None:
    """A window has 4n+1 frames: the VAE turns 4n+1 frames into n+1 latent frames."""
    if batch_size < 1 or batch_size % 4 != 1:
        nearest = " or ".join(str(v) for v in nearest_valid_batch_sizes(max(batch_size, 1)))
        raise UsageError(f"--batch-size {batch_size}: must be 4n+1 (1, 5, 9, 13, 17, 21, ...); nearest valid: {nearest}")


@dataclass(frozen=True)
class ProcessSettings:
    """Everything that changes the output pixels apart from the models."""

    resolution: int | None = None  # None: DEFAULT_RESOLUTION unless --scale is given
    max_resolution: int = 0
    scale: float | None = None
    batch_size: int = 21  # frames per window
    temporal_overlap: int = 0
    prepend_frames: int = 0
    color_correction: str = DEFAULT_COLOR_METHOD
    input_noise_scale: float = 0.0
    latent_noise_scale: float = 0.0
    seed: int = 42
    frames: tuple[int, int | None] | None = None  # input sub-range [start, stop)

    def __post_init__(self) -> None:
        if self.resolution is not None and self.resolution < 16:
            raise UsageError(f"--resolution {self.resolution}: must be at least 16 pixels (short side of the output)")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise UsageError(f"--scale {self.scale}: must be positive, e.g. 2 or 4")
        if self.resolution is not None and self.scale is not None:
            raise UsageError("--resolution and --scale both set the output size; pass only one")
        if self.max_resolution < 0:
            raise UsageError(f"--max-resolution {self.max_resolution}: must be >= 0 (0 means no cap)")
        check_batch_size(self.batch_size)
        if self.temporal_overlap < 0:
            raise UsageError(f"--temporal-overlap {self.temporal_overlap}: must be >= 0")
        if self.temporal_overlap >= self.batch_size:
            raise UsageError(f"--temporal-overlap {self.temporal_overlap}: must be smaller than "
                             f"--batch-size {self.batch_size}")
        if self.color_correction not in COLOR_METHODS:
            raise UsageError(f"--color-correction {self.color_correction}: use one of {', '.join(COLOR_METHODS)}")
        if self.prepend_frames < 0:
            raise UsageError(f"--prepend-frames {self.prepend_frames}: must be >= 0")
        for flag, value in (("--input-noise-scale", self.input_noise_scale),
                            ("--latent-noise-scale", self.latent_noise_scale)):
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"{flag} {value}: must be between 0 and 1")


@dataclass(frozen=True)
class RunSettings:
    """How the work runs: devices, chunking, resume, render-farm parts, logging."""

    devices: str = "auto"
    windows_per_chunk: int = 1
    max_in_flight: int | None = None
    resume: bool = True
    restart: bool = False
    max_retries: int = 1
    shard: str | None = None
    dry_run: bool = False
    log_format: str = "text"
    # Upscale what a cut-off container holds instead of failing it (a short output, with a note).
    allow_short_input: bool = False
    # --preview N: only output frame N, written beside its input frame as one PNG (no output).
    preview: int | None = None
    # --compare: also write input and output side by side, beside the output.
    compare: bool = False

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise UsageError(f"--log-format {self.log_format}: use text or json")
        if self.preview is not None and self.preview < 0:
            raise UsageError(f"--preview {self.preview}: give an output frame number, 0 or more")
        if self.preview is not None and (self.shard is not None or self.dry_run or self.compare):
            other = "--shard" if self.shard is not None else "--dry-run" if self.dry_run else "--compare"
            raise UsageError(f"--preview writes one comparison frame and no output: leave out {other}")
        if self.compare and self.shard is not None:
            raise UsageError("--compare needs the whole output, a shard writes a part of it: "
                             "leave out --compare (or --shard)")
        if self.windows_per_chunk < 1:
            raise UsageError(f"--chunk-windows {self.windows_per_chunk}: must be at least 1")
        if self.max_retries < 0:
            raise UsageError(f"--max-retries {self.max_retries}: must be >= 0")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.shard is not None and (self.restart or not self.resume):
            # Shards may share one work directory: wiping it would destroy the other shards' parts.
            raise UsageError("--shard keeps its part for `seedvr assemble`: it cannot be combined with "
                             "--restart or --no-resume; remove a stale part's work directory by hand instead")


@dataclass(frozen=True)
class MemorySettings:
    """How a worker fits the models into its device; none of this changes pixels.

    ``blocks_to_swap``: the first N DiT blocks live in host memory and are streamed through the
    GPU while the DiT runs (``memory.blockswap``); ``swap_io_components`` does the same for the
    layers before and after the blocks. Whether N fits the model is checked against the
    checkpoint's header (``run.models``), which knows how many blocks it has. ``vae_tiling``
    codes frames in spatial tiles (``memory.tiling.TiledVAE``): less memory, pictures within the
    tiling's blending of the untiled ones; ``auto`` leaves it to ``--vram auto`` (``run.fit``), which
    turns it on only where the budget needs it, and means off otherwise. ``vae_offload_device``
    keeps the VAE in host memory while the DiT runs, ``dit_offload_device`` the DiT's GPU-resident
    weights while the VAE codes (``memory.offload``); BlockSwap's swapped blocks always wait in host
    memory.
    ``dit_tiling`` runs the DiT on overlapping spatial
    tiles of the latent (``memory.dit_tiling.TiledDiT``); ``dit_tile_size`` is the longest side of
    a tile and ``dit_tile_overlap`` the shared band, both in output pixels, rounded down (size)
    and up (overlap) to whole attention windows of the frame (``memory.dit_tiling.plan_tiles``
    gives the tiles, and the tokens one tile runs, for a frame).
    """

    blocks_to_swap: int = 0
    swap_io_components: bool = False
    dit_offload_device: str = "none"
    # VAE tiling: frames coded in overlapping spatial tiles (sizes in output pixels).
    vae_tiling: str = "auto"
    vae_tile_size: int = 1024
    vae_tile_overlap: int = 128
    # shared: the tiles normalise with the GroupNorm statistics of one pass over the frame at half
    # size, so neighbouring tiles agree and leave no seams (memory.shared_statistics; that pass is
    # tiled like the rest, so it costs VAE time, not memory); own: each tile its own statistics, as
    # the reference (a little faster, but every tile is off by its own amount).
    vae_tile_statistics: str = "shared"
    # DiT tiling: the DiT run on overlapping spatial tiles of the latent (sizes in output pixels).
    dit_tiling: str = "off"
    dit_tile_size: int = 2592
    dit_tile_overlap: int = 480
    # Cap on what a worker's allocator may take of its GPU, in GiB (also how small cards are
    # emulated on a big one); None: the whole card.
    max_vram_gib: float | None = None
    vae_offload_device: str = "none"
    # The VAE's frame-by-frame convs keep a ring of three frames instead of copying two carried
    # frames in and out (models.vae.ConvRing): encode -13 %, decode -11 % time at 1080p on an H200,
    # for +2.8 / +6.4 GiB of peak (docs/benchmarks.md); off, the lean cache.
    vae_conv_rings: bool = False
    # auto: with a --max-vram budget, choose the savers the largest input needs (``run.fit``);
    # manual: use the savers exactly as given.
    vram: str = "auto"

    def __post_init__(self) -> None:
        if self.vram not in ("auto", "manual"):
            raise UsageError(f"--vram {self.vram}: use auto or manual")
        if self.max_vram_gib is not None and not (math.isfinite(self.max_vram_gib) and self.max_vram_gib > 0):
            raise UsageError(f"--max-vram {self.max_vram_gib}: give the GPU memory a worker may use in GiB, e.g. 8 or 24")
        if self.vae_tiling not in ("auto", "on", "off"):
            raise UsageError(f"--vae-tiling {self.vae_tiling}: use auto, on or off")
        if self.vae_tile_size < 64 or self.vae_tile_size % 8:
            raise UsageError(f"--vae-tile-size {self.vae_tile_size}: use a multiple of 8, at least 64 pixels")
        if not 0 <= self.vae_tile_overlap < self.vae_tile_size:
            raise UsageError(f"--vae-tile-overlap {self.vae_tile_overlap}: must be >= 0 and smaller than "
                             f"--vae-tile-size {self.vae_tile_size}")
        if self.vae_tile_statistics not in ("shared", "own"):
            raise UsageError(f"--vae-tile-statistics {self.vae_tile_statistics}: use shared or own")
        if self.dit_tiling not in ("on", "off"):
            raise UsageError(f"--dit-tiling {self.dit_tiling}: use on or off")
        if self.dit_tile_size < 256:
            raise UsageError(f"--dit-tile-size {self.dit_tile_size}: use at least 256 pixels (tiles are whole "
                             "attention windows, 240 x 432 pixels for 16:9)")
        if not 0 <= self.dit_tile_overlap < self.dit_tile_size:
            raise UsageError(f"--dit-tile-overlap {self.dit_tile_overlap}: must be >= 0 and smaller than "
                             f"--dit-tile-size {self.dit_tile_size}")
        if self.blocks_to_swap < 0:
            raise UsageError(f"--blocks-to-swap {self.blocks_to_swap}: must be >= 0 (0 keeps every block on the GPU)")
        if self.dit_offload_device not in ("none", "cpu"):
            raise UsageError(f"--dit-offload-device {self.dit_offload_device}: use none or cpu")
        if self.vae_offload_device not in ("none", "cpu"):
            raise UsageError(f"--vae-offload-device {self.vae_offload_device}: use none or cpu")

    @property
    def swaps(self) -> bool:
        return self.blocks_to_swap > 0 or self.swap_io_components

    @property
    def tiles_vae(self) -> bool:
        return self.vae_tiling == "on"

    @property
    def offloads_vae(self) -> bool:
        return self.vae_offload_device != "none"

    @property
    def offloads_dit(self) -> bool:
        return self.dit_offload_device != "none"


@dataclass(frozen=True)
class FlashVSRSettings:
    """The FlashVSR engine's settings (``--model flashvsr-...``); defaults are the reference tools'
    (``pipeline.flashvsr.choices``). All of them change pixels. Tile sizes are in input pixels,
    as in the reference node; segments are in frames."""

    scale: int = fv.DEFAULT_SCALE
    sparse_ratio: float = fv.DEFAULT_SPARSE_RATIO
    kv_ratio: float = fv.DEFAULT_KV_RATIO
    local_range: int = fv.DEFAULT_LOCAL_RANGE
    color_fix: bool = fv.DEFAULT_COLOR_FIX
    seed: int = 0
    tiled_dit: bool = fv.DEFAULT_TILED_DIT
    tile_size: int = fv.DEFAULT_TILE_SIZE
    tile_overlap: int = fv.DEFAULT_TILE_OVERLAP
    tiled_vae: bool = fv.DEFAULT_TILED_VAE
    segment_frames: int = fv.DEFAULT_SEGMENT_FRAMES
    segment_overlap: int = fv.DEFAULT_SEGMENT_OVERLAP

    def __post_init__(self) -> None:
        if self.scale not in fv.SCALES:
            raise UsageError(f"--scale {self.scale}: FlashVSR upscales by a whole factor, "
                             f"{', '.join(map(str, fv.SCALES))}")
        low, high = fv.SPARSE_RATIO_RANGE
        if not low <= self.sparse_ratio <= high:
            raise UsageError(f"--sparse-ratio {self.sparse_ratio}: use {low} to {high} (higher attends to more "
                             "blocks: steadier, slower)")
        low, high = fv.KV_RATIO_RANGE
        if not low <= self.kv_ratio <= high:
            raise UsageError(f"--kv-ratio {self.kv_ratio}: use {low} to {high} (cached temporal windows)")
        if self.local_range not in fv.LOCAL_RANGES:
            raise UsageError(f"--local-range {self.local_range}: use {' or '.join(map(str, fv.LOCAL_RANGES))}")
        if self.tile_size < 32 or self.tile_size % 32:
            raise UsageError(f"--dit-tile-size {self.tile_size}: FlashVSR tiles are input pixels, a multiple of 32 "
                             f"(default {fv.DEFAULT_TILE_SIZE})")
        if not 0 <= self.tile_overlap < self.tile_size:
            raise UsageError(f"--dit-tile-overlap {self.tile_overlap}: must be >= 0 and smaller than "
                             f"--dit-tile-size {self.tile_size}")
        if self.segment_frames < 1:
            raise UsageError(f"--segment-frames {self.segment_frames}: must be at least 1")
        if not 0 <= self.segment_overlap < self.segment_frames:
            raise UsageError(f"--segment-overlap {self.segment_overlap}: must be >= 0 and smaller than "
                             f"--segment-frames {self.segment_frames}")


@dataclass(frozen=True)
class JobSpec:
    """One invocation of ``seedvr upscale``."""

    inputs: tuple[str, ...]
    output: str | None = None
    sequence: bool = False
    fps: float | None = None
    model: ModelSettings = field(default_factory=ModelSettings)
    process: ProcessSettings = field(default_factory=ProcessSettings)
    run: RunSettings = field(default_factory=RunSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    output_settings: OutputSettings = field(default_factory=OutputSettings)
    # Used only when ``model.model`` names a FlashVSR model (``flashvsr_model``).
    flashvsr: FlashVSRSettings = field(default_factory=FlashVSRSettings)

    @property
    def flashvsr_model(self) -> fv.FlashVSRModel | None:
        """The FlashVSR model the run uses, or None for SeedVR2."""
        return fv.find_flashvsr_model(self.model.model)

    def __post_init__(self) -> None:
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise UsageError(f"--fps {self.fps}: must be a positive frame rate, e.g. 24 or 29.97")

    def pixel_settings(self) -> dict:
        """The settings that change pixels: part of the resume key of every input."""
        if self.flashvsr_model is not None:
            return {"flashvsr": asdict(self.flashvsr), "frames": self.process.frames,
                    "model": {"model": self.flashvsr_model.name, "text_embedding": self.model.text_embedding,
                              "dtype": self.model.dtype}}
        process = asdict(self.process)
        settings = {"process": process, "model": {"model": self.model.model, "vae": self.model.vae,
                                                   "text_embedding": self.model.text_embedding,
                                                   "dtype": self.model.dtype}}
        if self.memory.tiles_vae:
            # Tiles change pixels (a little); BlockSwap does not, so it is not part of the key.
            settings["vae_tiles"] = [self.memory.vae_tile_size, self.memory.vae_tile_overlap,
                                     self.memory.vae_tile_statistics]
        if self.memory.dit_tiling == "on":
            settings["dit_tiles"] = [self.memory.dit_tile_size, self.memory.dit_tile_overlap]
        return settings


def parse_frame_range(text: str | None) -> tuple[int, int | None] | None:
    """``START:END`` (END exclusive, either side may be empty) -> ``(start, stop)``."""
    if text is None:
        return None
    left, sep, right = text.partition(":")
    try:
        start = int(left) if left.strip() else 0
        stop = int(right) if right.strip() else None
    except ValueError:
        start, stop, sep = -1, None, ""
    if not sep or start < 0 or (stop is not None and stop <= start):
        raise UsageError(f"--frames {text}: write START:END with 0 <= START < END (END exclusive), e.g. 0:100 or 250:")
    return start, stop


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based ``i``) -> ``(i, n)``."""
    left, sep, right = text.partition("/")
    if not sep or not left.strip().isdigit() or not right.strip().isdigit():
        raise UsageError(f"--shard {text}: write it as I/N, e.g. 0/4 for the first of four shards")
    shard, count = int(left), int(right)
    if count < 1 or shard >= count:
        raise UsageError(f"--shard {text}: I must be between 0 and N-1 (shards are numbered from 0)")
    return shard, count
