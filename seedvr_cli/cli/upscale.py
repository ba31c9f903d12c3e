"""``seedvr upscale``: the main job. Parses flags into a ``JobSpec`` and calls ``run_upscale``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from seedvr_cli.cli.app import EXIT_FAILURE, EXIT_PARTIAL, app
from seedvr_cli.cli.engine_flags import check_engine_flags, flashvsr_settings
from seedvr_cli.cli.stopsignals import interrupted_exit_code
from seedvr_cli.config import JobSpec, MemorySettings, ModelSettings, ProcessSettings, RunSettings, parse_frame_range
from seedvr_cli.media.settings import OutputSettings
from seedvr_cli.pipeline.choices import ATTENTION_CHOICES, COLOR_METHODS, DEFAULT_RESOLUTION, DTYPE_CHOICES
from seedvr_cli.pipeline.flashvsr import choices as fv

# Every default comes from the settings dataclasses: one place for them.
_MODEL_DEFAULTS, _PROCESS_DEFAULTS, _RUN_DEFAULTS = ModelSettings(), ProcessSettings(), RunSettings()
_MEMORY_DEFAULTS = MemorySettings()

_MODEL = "Model"
_SIZE = "Size and time"
_QUALITY = "Quality"
_OUTPUT = "Output"
_RUN = "Devices and runs"
_MEMORY = "Memory"
_FLASHVSR = "FlashVSR (--model flashvsr-...)"


def _profile_help() -> str:
    """--profile's help: every preset in configs/presets with what it does (read from the folder,
    so that a preset added there shows up without touching this file)."""
    from rich.markup import escape

    from seedvr_cli.presets import preset_descriptions

    listed = "".join(f"\n\n- [bold]{escape(name)}[/]: {escape(text)}" for name, text in preset_descriptions().items())
    return ("Named settings, or the path of your own JSON file in the same format (configs/README.md); flags given "
            f"on the command line win \\[default: none]. Installed presets:{listed or ' none'}")


def _profile_names(incomplete: str) -> list[str]:
    from seedvr_cli.presets import preset_names

    return [name for name in preset_names() if name.startswith(incomplete)]



@app.command(no_args_is_help=True)
def upscale(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(
        help="Videos, images, folders (searched recursively), globs such as 'clips/*.mp4', or image "
             "sequence patterns such as 'frames/%06d.png'.", show_default=False)],
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", help="Output file (one input only) or folder (mirrors input folders) "
                               "\\[default: {stem}_upscaled.{ext} next to each input].", show_default=False)] = None,
    profile: Annotated[Optional[str], typer.Option(
        help=_profile_help(), show_default=False, autocompletion=_profile_names)] = None,
    # Model
    model: Annotated[str, typer.Option(
        help="DiT checkpoint: a registry name (see `seedvr models list`) or a file (.safetensors, .gguf, .pth). "
             "Downloaded on first use. Or a FlashVSR model, which selects that engine: "
             f"{', '.join(fv.FLASHVSR_MODELS)} (v1.1 is the newer checkpoint; tiny and tiny-long decode with "
             "the small TCDecoder, tiny-long chunk by chunk for less memory; full with the Wan2.1 VAE).",
        rich_help_panel=_MODEL)] = _MODEL_DEFAULTS.model,
    vae: Annotated[str, typer.Option(help="VAE checkpoint: registry name or file.",
                                     rich_help_panel=_MODEL)] = _MODEL_DEFAULTS.vae,
    text_embedding: Annotated[Optional[str], typer.Option(
        help="Positive text embedding file (pos_emb.pt / pos_emb.safetensors) \\[default: the one beside the "
             "model file, else the registry's copy].", rich_help_panel=_MODEL,
        show_default=False)] = None,
    model_dir: Annotated[Optional[str], typer.Option(
        help="Folder with pre-staged checkpoints (e.g. ComfyUI models/SEEDVR2); also $SEEDVR_MODEL_DIR "
             "\\[default: none: the Hugging Face cache only].",
        envvar="SEEDVR_MODEL_DIR", rich_help_panel=_MODEL, show_default=False)] = None,
    no_download: Annotated[bool, typer.Option(
        "--no-download", help="Never download; fail with the command to fetch a missing file \\[default: off].",
        rich_help_panel=_MODEL)] = False,
    dtype: Annotated[str, typer.Option(
        help="Compute precision: auto (bf16 where supported, fp16 on older GPUs, fp32 on CPU), "
             f"{', '.join(DTYPE_CHOICES)}.", rich_help_panel=_MODEL)] = _MODEL_DEFAULTS.dtype,
    attention: Annotated[str, typer.Option(
        help=f"DiT attention: {', '.join(ATTENTION_CHOICES)}. auto takes the fastest this GPU has (flash: all "
             "windows of a layer in one varlen call; else sdpa); flex is FlexAttention; one the device lacks "
             "falls back to sdpa with a note.", rich_help_panel=_MODEL)] = _MODEL_DEFAULTS.attention,
    compile_dit: Annotated[bool, typer.Option(
        "--compile/--no-compile", help="torch.compile the DiT blocks: faster windows after a one-off compile "
             "(reported in the log; kept in the user cache for later runs), worth it for long videos "
             "\\[default: no-compile].", rich_help_panel=_MODEL, show_default=False)] = _MODEL_DEFAULTS.compile,
    # Size and time
    resolution: Annotated[Optional[int], typer.Option(
        "--resolution", "-r", help=f"Short side of the output in pixels \\[default: {DEFAULT_RESOLUTION}].",
        rich_help_panel=_SIZE, show_default=False)] = None,
    max_resolution: Annotated[int, typer.Option(
        help="Cap on the long side of the output (0 = no cap).", rich_help_panel=_SIZE)] = _PROCESS_DEFAULTS.max_resolution,
    scale: Annotated[Optional[float], typer.Option(
        help="Output short side as a multiple of the input's (e.g. 2 or 4); instead of --resolution "
             f"\\[default: none: --resolution applies]. FlashVSR: 2, 3 or 4 ({fv.DEFAULT_SCALE} when not given); the "
             "output is then cropped to multiples of 128 pixels.",
        rich_help_panel=_SIZE, show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(
        help="Frames per window, the frames the model sees at once (the ComfyUI node's batch size); must be "
             "4n+1 (5, 9, 13, 17, 21, ...). Larger windows give steadier video and need more VRAM.",
        rich_help_panel=_SIZE)] = _PROCESS_DEFAULTS.batch_size,
    temporal_overlap: Annotated[int, typer.Option(
        help="Frames shared by neighbouring windows, crossfaded to hide window seams.",
        rich_help_panel=_SIZE)] = _PROCESS_DEFAULTS.temporal_overlap,
    prepend_frames: Annotated[int, typer.Option(
        help="Mirrored frames put before the start so the first real frame is not coded like a still; "
             "removed from the output.", rich_help_panel=_SIZE)] = _PROCESS_DEFAULTS.prepend_frames,
    frames: Annotated[Optional[str], typer.Option(
        help="Only input frames START:END (END exclusive, e.g. 0:100 or 250:). Audio is not copied then "
             "\\[default: all].",
        rich_help_panel=_SIZE, show_default=False)] = None,
    sequence: Annotated[bool, typer.Option(
        "--sequence", help="Treat a folder INPUT as one image sequence (a video), not as separate images "
                           "\\[default: off].",
        rich_help_panel=_SIZE)] = False,
    fps: Annotated[Optional[float], typer.Option(
        help="Frame rate of image-sequence inputs \\[default: 25].", rich_help_panel=_SIZE, show_default=False)] = None,
    # Quality
    color_correction: Annotated[str, typer.Option(
        "--color-correction", help=f"Match the output's colours to the input: {', '.join(COLOR_METHODS)}.",
        rich_help_panel=_QUALITY)] = _PROCESS_DEFAULTS.color_correction,
    input_noise_scale: Annotated[float, typer.Option(
        help="Noise added to the input before encoding (0-1); can soften compression artefacts.",
        rich_help_panel=_QUALITY)] = _PROCESS_DEFAULTS.input_noise_scale,
    latent_noise_scale: Annotated[float, typer.Option(
        help="Noise added to the encoded input (0-1); more freedom for the model, less fidelity.",
        rich_help_panel=_QUALITY)] = _PROCESS_DEFAULTS.latent_noise_scale,
    seed: Annotated[int, typer.Option(help="Seed of the diffusion noise (per window position).",
                                      rich_help_panel=_QUALITY)] = _PROCESS_DEFAULTS.seed,
    # Output
    codec: Annotated[Optional[str], typer.Option(
        help="h264, h265, av1, prores, prores4444, ffv1, or png/tiff/jpeg/webp/dpx for image output "
             "\\[default: h264; h265 for 10-bit; prores4444 in .mov with alpha].", rich_help_panel=_OUTPUT,
        show_default=False)] = None,
    crf: Annotated[Optional[int], typer.Option(
        help="Quality of h264/h265/av1 (lower is better; 0 lossless) \\[default: 16 h264, 18 h265].",
        rich_help_panel=_OUTPUT, show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option(
        help="Encoder speed preset (h264/h265: ultrafast ... veryslow) \\[default: medium].",
        rich_help_panel=_OUTPUT, show_default=False)] = None,
    pix_fmt: Annotated[Optional[str], typer.Option(
        help="Output pixel format, e.g. yuv420p, yuv444p10le \\[default: the codec's for the input's bit depth].",
        rich_help_panel=_OUTPUT, show_default=False)] = None,
    encoder_option: Annotated[Optional[list[str]], typer.Option(
        "-e", "--encoder-option", help="Extra encoder option KEY=VALUE (repeatable), e.g. -e tune=film "
                                       "\\[default: none].",
        rich_help_panel=_OUTPUT, show_default=False)] = None,
    ten_bit: Annotated[bool, typer.Option(
        "--10bit", help="Write 10-bit video (h265 by default); 10/16-bit inputs do so anyway \\[default: off].",
        rich_help_panel=_OUTPUT)] = False,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Drop audio and subtitle streams instead of copying "
                                                              "them \\[default: off: they are copied].",
                                           rich_help_panel=_OUTPUT)] = False,
    suffix: Annotated[str, typer.Option(help="Suffix of default output names.", rich_help_panel=_OUTPUT)] = "_upscaled",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs \\[default: off].",
                                            rich_help_panel=_OUTPUT)] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Skip inputs whose output exists (re-runs of folders) \\[default: off].",
        rich_help_panel=_OUTPUT)] = False,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Also write {output}_compare: each input frame (bicubic to the output size) left of its "
                          "output frame, same encoding, timing and audio \\[default: off].", rich_help_panel=_OUTPUT)] = False,
    preview: Annotated[Optional[int], typer.Option(
        "--preview", metavar="N", help="Judge settings before a long run: compute only output frame N (0-based) "
                                       "and write {output}_preview_N.png, the input frame left of the output "
                                       "frame; no output is written \\[default: off].", rich_help_panel=_OUTPUT,
        show_default=False)] = None,
    # Memory
    blocks_to_swap: Annotated[int, typer.Option(
        help="BlockSwap: keep the first N DiT blocks in host memory and stream each onto the GPU just before it "
             "runs (0 = none; up to all 32 of the 3B, 36 of the 7B). Same pictures, less VRAM; needs host RAM "
             "for the swapped weights.", rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.blocks_to_swap,
    swap_io_components: Annotated[bool, typer.Option(
        "--swap-io-components", help="Also stream the DiT's input and output layers (embeddings, head) from host "
                                     "memory \\[default: off].", rich_help_panel=_MEMORY,
        show_default=False)] = _MEMORY_DEFAULTS.swap_io_components,
    dit_offload_device: Annotated[str, typer.Option(
        help="cpu: keep the DiT's weights in host memory while the VAE encodes and decodes (they come onto "
             "the GPU once per window; same pictures; saves the DiT's size, 6.3 GiB for the 3B and 15.3 for the "
             "7B in bf16, where the VAE sets the peak, as at 1080p; needs that much host RAM); none: keep them on "
             "the GPU. BlockSwap's swapped blocks always wait in host memory.",
        rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.dit_offload_device,
    vae_offload_device: Annotated[str, typer.Option(
        help="cpu: keep the VAE in host memory while the DiT runs (it comes onto the GPU only to encode and "
             "decode; saves ~0.5 GiB where the DiT sets the peak); none: keep it on the GPU.",
        rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.vae_offload_device,
    vae_conv_rings: Annotated[bool, typer.Option(
        "--vae-conv-rings/--no-vae-conv-rings",
        help="Let the VAE keep one more frame per convolution so it never copies its carried frames: about 12 % "
             "faster VAE, +6.4 GiB of peak at 1080p (same pictures) \\[default: off].",
        rich_help_panel=_MEMORY, show_default=False)] = _MEMORY_DEFAULTS.vae_conv_rings,
    vram: Annotated[str, typer.Option(
        help="auto: fit the run into the GPU memory it may use (--max-vram, else the free memory of the "
             "devices): choose BlockSwap, VAE and DiT tiling, VAE offload and, as a last resort, shorter "
             "windows so that the largest input fits, say in one line what was chosen, and step down once more "
             "if a chunk still runs out of memory (memory flags given on the command line are kept as they "
             "are); manual: use the memory flags as given. FlashVSR: auto chooses DiT tiles the same way.",
        rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.vram,
    max_vram: Annotated[Optional[float], typer.Option(
        help="GPU memory a worker may use, in GiB (e.g. 8 to behave like an 8 GB card); allocations past it "
             "fail that chunk \\[default: the whole card].", rich_help_panel=_MEMORY, show_default=False)] = None,
    vae_tiling: Annotated[str, typer.Option(
        help="on: encode and decode frames in overlapping spatial tiles (less VRAM at large sizes; tiles are "
             "blended with raised-cosine ramps; the decoder's mid block still sees whole frames), off: whole "
             "frames, auto: tiles only where --vram auto needs them. FlashVSR full mode: auto and on decode in the reference's 480 x 832 px tiles, off whole frames.",
        rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.vae_tiling,
    vae_tile_size: Annotated[int, typer.Option(
        help="VAE tile size in pixels (multiple of 8).", rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.vae_tile_size,
    vae_tile_overlap: Annotated[int, typer.Option(
        help="Pixels shared by neighbouring VAE tiles.", rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.vae_tile_overlap,
    vae_tile_statistics: Annotated[str, typer.Option(
        help="shared: every VAE tile normalises with the statistics of one extra pass over the frame at half "
             "size, so tiles agree and leave no seams (no more memory; that pass costs VAE time: 3-16 % of the "
             "window throughput measured); own: each tile with its own statistics, as the ComfyUI node does "
             "(a little faster, but tiles can differ in tone at their seams).",
        rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.vae_tile_statistics,
    dit_tiling: Annotated[str, typer.Option(
        help="on: run the DiT on overlapping spatial tiles of the latent, all frames of a window at once (less "
             "VRAM for large outputs, more compute for the overlaps; tiles are blended with linear ramps), "
             "off: whole frames.", rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.dit_tiling,
    dit_tile_size: Annotated[int, typer.Option(
        help="Longest side of a DiT tile in output pixels, rounded down to whole attention windows (a tile is "
             "k x k windows shaped like the frame; 16:9 windows are 240 x 432 px). FlashVSR: side in input "
             f"pixels, as in the ComfyUI node ({fv.DEFAULT_TILE_SIZE} when not given).",
        rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.dit_tile_size,
    dit_tile_overlap: Annotated[int, typer.Option(
        help="Output pixels shared by neighbouring DiT tiles, rounded up to whole attention windows. FlashVSR: "
             f"input pixels ({fv.DEFAULT_TILE_OVERLAP} when not given).",
        rich_help_panel=_MEMORY)] = _MEMORY_DEFAULTS.dit_tile_overlap,
    # FlashVSR
    sparse_ratio: Annotated[float, typer.Option(
        help="Block-sparse attention: how many key blocks each query block attends to (1.5-2.0; higher is "
             "steadier and slower).", rich_help_panel=_FLASHVSR)] = fv.DEFAULT_SPARSE_RATIO,
    kv_ratio: Annotated[float, typer.Option(
        help="Streaming KV cache length in temporal windows of 2 latent frames (1.0-3.0; longer is steadier "
             "and needs more memory).", rich_help_panel=_FLASHVSR)] = fv.DEFAULT_KV_RATIO,
    local_range: Annotated[int, typer.Option(
        help="Side of the local attention neighbourhood in attention windows (9 or 11).",
        rich_help_panel=_FLASHVSR)] = fv.DEFAULT_LOCAL_RANGE,
    color_fix: Annotated[bool, typer.Option(
        "--color-fix/--no-color-fix", help="Match each output frame's colour mean and spread to the "
                                           "upscaled input frame (adain, as the reference tools).",
        rich_help_panel=_FLASHVSR)] = fv.DEFAULT_COLOR_FIX,
    segment_frames: Annotated[int, typer.Option(
        help="Frames per temporal segment, the unit of work a device streams (and resumes) on its own; "
             "the plan does not depend on the number of devices.",
        rich_help_panel=_FLASHVSR)] = fv.DEFAULT_SEGMENT_FRAMES,
    segment_overlap: Annotated[int, typer.Option(
        help="Frames shared by neighbouring segments, crossfaded (the standalone FlashVSR CLI's "
             "--segment_overlap).", rich_help_panel=_FLASHVSR)] = fv.DEFAULT_SEGMENT_OVERLAP,
    # Devices and runs
    devices: Annotated[str, typer.Option(
        "--devices", "--device", help="Where to run: auto (all GPUs, else CPU), all, 0,1, 0-3, cuda:1, cpu, "
                                      "cpu,cpu. One worker per device.", rich_help_panel=_RUN)] = _RUN_DEFAULTS.devices,
    list_devices: Annotated[bool, typer.Option(
        "--list-devices", help="List the visible devices and exit.", rich_help_panel=_RUN,
        is_eager=True, callback=lambda value: _print_devices() if value else None)] = False,
    chunk_windows: Annotated[int, typer.Option(
        help="Windows per chunk, the unit of work handed to a worker.",
        rich_help_panel=_RUN)] = _RUN_DEFAULTS.windows_per_chunk,
    max_in_flight: Annotated[Optional[int], typer.Option(
        help="Chunks finished or running but not yet written (bounds RAM and disk) \\[default: 2 per worker + 2].",
        rich_help_panel=_RUN, show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Keep finished chunks next to the output and resume an interrupted run.",
        rich_help_panel=_RUN)] = True,
    restart: Annotated[bool, typer.Option("--restart", help="Discard finished chunks of an earlier run first "
                                                            "\\[default: off].",
                                          rich_help_panel=_RUN)] = False,
    max_retries: Annotated[int, typer.Option(help="Retries of a failed chunk (on another device when possible).",
                                             rich_help_panel=_RUN)] = _RUN_DEFAULTS.max_retries,
    shard: Annotated[Optional[str], typer.Option(
        help="Render farms: do part I/N (0-based) of every input and keep it for `seedvr assemble` "
             "\\[default: none: the whole input].",
        rich_help_panel=_RUN, show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (sizes, windows, outputs, VRAM estimate, "
                                                             "model and devices) and exit without loading models "
                                                             "\\[default: off].",
                                          rich_help_panel=_RUN)] = False,
    log_format: Annotated[str, typer.Option(help="text (progress bar on a terminal) or json (JSON lines on stdout).",
                                            rich_help_panel=_RUN)] = _RUN_DEFAULTS.log_format,
    allow_short_input: Annotated[bool, typer.Option(
        "--allow-short-input", help="Upscale the frames a cut-off video holds (fewer than its container "
                                    "announces) instead of failing that file; the output is as short, with a note \\[default: off].",
        rich_help_panel=_RUN)] = _RUN_DEFAULTS.allow_short_input,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Text log: also say when each device is ready, and end with the time spent in "
                                "each stage and the peak VRAM per device \\[default: off].", rich_help_panel=_RUN)] = False,
) -> None:
    """Upscale and restore videos and images with SeedVR2 (or FlashVSR: --model flashvsr-v1.1-tiny)."""
    if not dry_run:
        from seedvr_cli.parallel.launcher import start_worker_server
        from seedvr_cli.run.preload import WORKER_MODULES

        # First, so that the workers' imports run while this process parses, probes and resolves.
        start_worker_server(preload=WORKER_MODULES)
    # Every flag by name, with a profile's values filled in where the flag was not given.
    flags = dict(locals())
    if profile is not None:
        flags.update(_profile_values(ctx, profile))
    check_engine_flags(ctx, flags["model"])
    flashvsr = fv.find_flashvsr_model(flags["model"]) is not None
    memory_flags = {key: flags[key] for key in _MEMORY_FLAGS}
    if flashvsr:
        # FlashVSR reads the shared tiling flags in its own units (flashvsr_settings): SeedVR2's settings keep theirs.
        memory_flags.update({key: getattr(_MEMORY_DEFAULTS, key) for key in _SHARED_TILING_FLAGS})
    output_settings = OutputSettings(
        codec=flags["codec"], crf=flags["crf"], preset=preset, pix_fmt=pix_fmt,
        encoder_options=OutputSettings.parse_encoder_options(encoder_option or []),
        ten_bit=True if ten_bit else None, keep_audio=not no_audio, keep_subtitles=not no_audio,
        overwrite=overwrite, skip_existing=skip_existing, suffix=suffix,
    )
    spec = JobSpec(
        inputs=tuple(inputs), output=output, sequence=sequence, fps=fps,
        model=ModelSettings(model=flags["model"], vae=flags["vae"], text_embedding=text_embedding, model_dir=model_dir,
                            dtype=flags["dtype"], download=not no_download, attention=flags["attention"],
                            compile=flags["compile_dit"]),
        process=ProcessSettings(
            **{key: flags[key] for key in _PROCESS_FLAGS}, frames=parse_frame_range(frames),
        ),
        run=RunSettings(devices=devices, windows_per_chunk=chunk_windows, max_in_flight=max_in_flight,
                        resume=resume, restart=restart, max_retries=max_retries, shard=shard, dry_run=dry_run,
                        log_format=log_format, allow_short_input=allow_short_input,
                        preview=preview, compare=compare),
        memory=MemorySettings(**memory_flags, max_vram_gib=flags["max_vram"],
                              vram="manual" if _savers_given(ctx) else flags["vram"]),
        output_settings=output_settings,
        **({"flashvsr": flashvsr_settings(ctx, flags)} if flashvsr else {}),
    )
    _validate_early(spec)
    from seedvr_cli.cli.report import make_reporter
    from seedvr_cli.run.upscale import run_upscale

    reporter = make_reporter(log_format, verbose=verbose)
    try:
        summary = run_upscale(spec, reporter)
    except KeyboardInterrupt as stop:
        # Ctrl-C, SIGTERM or SIGHUP (cli.stopsignals): by now the workers are stopped and partial
        # files removed. Say what was kept, in one line and the chosen log format.
        reporter.close()  # the progress bar off the terminal, the cursor back, before the last word
        cause = f" ({stop})" if str(stop) else ""
        kept = "; finished chunks are kept beside the output: run the same command again to resume" if resume else ""
        reporter.message(f"interrupted{cause}{kept}")
        raise typer.Exit(interrupted_exit_code(stop)) from None
    finally:
        reporter.close()
    reporter.summary(summary)
    if summary.failed:
        raise typer.Exit(EXIT_PARTIAL if len(summary.failed) < len(summary.outcomes) else EXIT_FAILURE)


# Flags that map one to one onto ProcessSettings fields.
_PROCESS_FLAGS = ("resolution", "max_resolution", "scale", "batch_size", "temporal_overlap", "prepend_frames",
                  "color_correction", "input_noise_scale", "latent_noise_scale", "seed")


# Flags that map one to one onto MemorySettings fields.
_MEMORY_FLAGS = ("blocks_to_swap", "swap_io_components", "dit_offload_device", "vae_offload_device", "vae_tiling",
                 "vae_tile_size", "vae_tile_overlap", "vae_tile_statistics", "dit_tiling", "dit_tile_size",
                 "dit_tile_overlap", "vae_conv_rings")

# Flags both engines read, FlashVSR in its own units.
_SHARED_TILING_FLAGS = ("dit_tiling", "dit_tile_size", "dit_tile_overlap", "vae_tiling")

# Memory flags that, given on the command line, the user means as they are (--vram auto keeps off them).
_SAVER_FLAGS = ("blocks_to_swap", "swap_io_components", "vae_tiling", "vae_tile_size", "vae_tile_overlap",
                "vae_offload_device", "dit_tiling", "dit_tile_size", "dit_tile_overlap", "vae_conv_rings")


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether flag ``name`` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    # Compared by name: Typer may bring its own copy of click and with it another enum class.
    return source is not None and source.name != "DEFAULT"


def _savers_given(ctx: typer.Context) -> bool:
    # "--vae-tiling auto" hands the choice to --vram auto rather than taking it.
    return any(_given(ctx, name) and not (name == "vae_tiling" and ctx.params.get(name) == "auto")
               for name in _SAVER_FLAGS)


def _profile_values(ctx: typer.Context, name: str) -> dict:
    """The profile's settings for every flag that was not given explicitly on the command line,
    converted like the flag's own value (a user's file may hold "21" or "twenty-one")."""
    from seedvr_cli.errors import UsageError
    from seedvr_cli.presets import load_preset

    preset = load_preset(name)
    params = {param.name: param for param in ctx.command.params}
    values = {}
    for key, value in preset.settings.items():
        if _given(ctx, key):
            continue
        try:
            values[key] = params[key].process_value(ctx, value)
        except Exception as err:  # click's BadParameter, from whichever click Typer brings
            message = getattr(err, "message", None) or str(err)
            raise UsageError(f"--profile {preset.source or name}: {key} = {value!r}: {message}") from None
    return values


def _validate_early(spec) -> None:
    """What the settings cannot check by themselves (they validate their own values when built):
    whether the devices asked for exist on this machine, before any file is touched."""
    if not spec.run.dry_run:
        from seedvr_cli.parallel.devices import parse_devices

        parse_devices(spec.run.devices)


def _print_devices() -> None:
    """``--list-devices``: runs before INPUT is required, then exits."""
    from rich.table import Table

    from seedvr_cli.cli.app import console
    from seedvr_cli.parallel.devices import list_devices as rows

    table = Table("device", "name", "details")
    for row in rows():
        table.add_row(*row)
    console.print(table)
    raise typer.Exit()
