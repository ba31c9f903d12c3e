#!/usr/bin/env python3
"""Run the ComfyUI "FlashVSR Ultra Fast" node's own pipeline code on a clip, from the model files
seedvr-cli reads, and report its speed and peak VRAM (issue 16: our FlashVSR against the reference).

    python scripts/flashvsr_reference.py --reference .ref/ComfyUI-FlashVSR_Ultra_Fast \\
        --models /tmp/seedvr-work/flashvsr-v1.1 --mode tiny clip.mp4 -o ref_tiny.mkv

Nothing of the reference is copied here: its ``src`` package is imported at run time from the
``--reference`` checkout (a plain export of lihaoyun6/ComfyUI-FlashVSR_Ultra_Fast, or a fork with the
same ``src`` layout), under the package name ``flashvsr_reference_src`` so that its generic name
``src`` cannot clash. ``nodes.py`` is not imported (it needs ComfyUI); what it does around the
pipeline is redone here, step by step as it does it:

- models: a ``ModelManager`` (bf16, on the CPU) loads the DiT file (and for ``full`` the Wan2.1 VAE,
  whose encoder is then dropped); ``tiny`` / ``tiny-long`` get a TCDecoder built with the node's
  channels (512, 256, 128, 128; latent 16 + 768) and loaded non-strictly; the LQ projector is
  built for 3 -> 1536 with one output layer and loaded strictly; then the pipeline is moved to the
  device, VRAM management is turned on, the cross-attention KV is made from the prompt embedding,
  and everything is offloaded until the call (the node's ``init_pipeline``). The files come from
  ``--models`` (``posi_prompt.pth`` too, where the node reads its own copy). v1.1 uses the
  checkout's ``Causal_LQ4x_Proj``; a checkout without it (lihaoyun6 at 9bd91d0 has only v1.0's
  ``Buffer_LQ4x_Proj``) gets the v1.0 projector with a warning and ``"lq_proj"`` in the JSON says
  so: the same weights and cost, different pictures after the first clip.
- input: the frames as the node receives them (float RGB in [0, 1], decoded by seedvr-cli's
  reader, so both tools see the same pixels); clips under 21 frames get their last frame repeated
  up to 21; the streamed length is the largest 8n+1 <= frames + 4 (positions past the clip repeat
  its last frame; a clip whose frames + 4 is not 8n+1 loses up to 7 tail frames, where seedvr-cli
  pads up instead: 45 frames lose none); each frame is upscaled by ``--scale`` with
  ``F.interpolate`` bicubic (align_corners=False) on the device, centre-cropped to multiples of 128
  pixels, then cast and mapped to [-1, 1]. The LQ video stays on the CPU for ``tiny-long``, as the node keeps it.
- call: the node's untiled call (``tiled_dit`` off; ``tiled`` = ``--tiled-vae``, on by default, only
  matters for ``full``), one step, cfg 1, ``topk_ratio = sparse_ratio * 768 * 1280 / (H * W)``,
  ``force_offload`` on (the node's default: the weights move to the GPU at the start of the call
  and back at its end, inside the timed part, as a node user waits for them).
- output: the node's outputs (at most ``frames``), mapped to [0, 1], clamped, rounded to 8 bits,
  written as an FFV1 .mkv (bgr0, lossless RGB) at the input's frame rate, readable by compare_videos.py.

Attention: the node's default ``sparse_sage_attention`` (Triton, int8 Q/K; on a CPU only through
Triton's interpreter, ``TRITON_INTERPRET=1``, slowly). ``--attention sdpa-block-mask`` swaps in a
PyTorch stand-in (the same 128x64 block mask, dense masked softmax in the working dtype) for quick
checks off the GPU; it is not the reference kernel and its timings mean nothing.

Noise: ``--noise node`` (default) draws it as the pipeline does (a generator on the device, seeded,
in the working dtype); ``--noise seedvr`` draws it as seedvr-cli does (CPU generator, float32,
then cast), so pictures can be compared with ours; timings do not depend on it.

One JSON line goes to stdout (and to ``--json`` if given): mode, version, projector, attention,
frames, sizes, ``load_s`` (model building, apart), ``warmup_s`` (on a GPU: the sparse_sage kernels
compiled on a small problem first, apart), ``run_s`` (the pipeline call and the final copy
to the host, CUDA-synchronized), ``fps`` (output frames / run_s), ``peak_vram_gib``
(``torch.cuda.max_memory_allocated`` over the call, counters reset after loading) and
``load_peak_vram_gib``. Ctrl-C during the call still prints the line, with ``"interrupted": true``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seedvr_cli.errors import UserError  # noqa: E402

PACKAGE = "flashvsr_reference_src"
MODES = ("tiny", "tiny-long", "full")
DIT_FILE = "diffusion_pytorch_model_streaming_dmd.safetensors"
LQ_PROJ_FILE = "LQ_proj_in.ckpt"
TCDECODER_FILE = "TCDecoder.ckpt"
VAE_FILE = "Wan2.1_VAE.pth"
PROMPT_FILE = "posi_prompt.pth"
# The node's constants: minimum streamed clip, tail frames the decoders need, crop multiple,
# TCDecoder widths, LQ projector output width, and the area the top-k ratio is relative to.
MIN_FRAMES = 21
TAIL_FRAMES = 4
SIZE_MULTIPLE = 128
TCDECODER_CHANNELS = [512, 256, 128, 128]
TCDECODER_LATENT_CHANNELS = 16 + 768
LQ_PROJ_OUT = 1536
TOPK_AREA = 768 * 1280
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GIB = 1024**3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="input video")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .mkv (FFV1)")
    parser.add_argument("--reference", type=Path, required=True,
                        help="checkout of ComfyUI-FlashVSR_Ultra_Fast (the folder holding src/)")
    parser.add_argument("--models", type=Path, required=True, help="folder with the FlashVSR files seedvr-cli reads")
    parser.add_argument("--mode", choices=MODES, default="tiny")
    parser.add_argument("--version", choices=("1.0", "1.1"), default="1.1", help="which LQ projector (default 1.1)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=4)
    parser.add_argument("--sparse-ratio", type=float, default=2.0)
    parser.add_argument("--kv-ratio", type=float, default=3.0)
    parser.add_argument("--local-range", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    parser.add_argument("--no-tiled-vae", dest="tiled_vae", action="store_false", help="untiled Wan VAE decode (full)")
    parser.add_argument("--no-color-fix", dest="color_fix", action="store_false")
    parser.add_argument("--no-force-offload", dest="force_offload", action="store_false",
                        help="leave the weights on the device after the call")
    parser.add_argument("--attention", choices=("sparse-sage", "sdpa-block-mask"), default="sparse-sage")
    parser.add_argument("--noise", choices=("node", "seedvr"), default="node")
    parser.add_argument("--frames", type=int, default=None, help="use only the first N frames of the input")
    parser.add_argument("--device", default=None, help="cuda:N or cpu (default: cuda:0 when there is one)")
    parser.add_argument("--json", type=Path, default=None, help="also append the JSON line to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the reference package


def import_reference(folder: Path):
    """The checkout's ``src`` package, imported as ``flashvsr_reference_src``."""
    init = folder / "src" / "__init__.py"
    if not (folder / "src" / "pipelines" / "flashvsr_tiny.py").is_file():
        raise UserError(f"{folder}: no src/pipelines/flashvsr_tiny.py; give --reference the ComfyUI-FlashVSR_Ultra_Fast "
                        f"checkout (git -C MIRROR archive HEAD src nodes.py | tar -x -C {folder})")
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    try:
        spec.loader.exec_module(package)
    except ModuleNotFoundError as missing:
        del sys.modules[PACKAGE]
        raise UserError(f"{folder}/src needs the Python module {missing.name!r}, not installed here; install it "
                        f"(the reference's requirements.txt) and run again") from None
    return package


def reference_module(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


def projector_class(utils, version: str) -> type:
    """v1.1's ``Causal_LQ4x_Proj`` where the checkout has it, else v1.0's ``Buffer_LQ4x_Proj``."""
    if version == "1.1":
        if hasattr(utils, "Causal_LQ4x_Proj"):
            return utils.Causal_LQ4x_Proj
        print("warning: this reference checkout has no Causal_LQ4x_Proj (v1.1); using its v1.0 Buffer_LQ4x_Proj: "
              "same weights and cost, different pictures after the first clip", file=sys.stderr)
    return utils.Buffer_LQ4x_Proj


def block_mask_sdpa(q, k, v, mask_id=None, is_causal=False, tensor_layout="HND"):
    """Stand-in for the reference's ``sparse_sageattn`` (HND layout): dense attention restricted
    to the selected blocks of ``mask_id`` (128 query rows by 64 key columns); rows that select no
    block give 0. For checks off the GPU only."""
    if tensor_layout != "HND" or is_causal:
        raise NotImplementedError("the stand-in attention covers the reference's call only (HND, not causal)")
    queries, keys = q.shape[2], k.shape[2]
    if mask_id is None:
        allowed = torch.ones(queries, keys, dtype=torch.bool, device=q.device)
    else:
        allowed = mask_id.bool().repeat_interleave(128, dim=2)[:, :, :queries]
        allowed = allowed.repeat_interleave(64, dim=3)[..., :keys]
    out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), attn_mask=allowed)
    return torch.nan_to_num(out, nan=0.0)


def warm_up_attention(dit_module, pipe, device: str, dtype: torch.dtype) -> None:
    """Compile the sparse_sage Triton kernels on a small problem of the DiT's head shape, so that
    the timed call does not include the first-use compilation (Triton caches it on disk after)."""
    attention = pipe.dit.blocks[0].self_attn
    q, k, v = (torch.randn(1, attention.num_heads, n, attention.head_dim, device=device, dtype=dtype)
               for n in (256, 384, 384))
    mask = torch.ones(1, attention.num_heads, 2, 6, dtype=torch.int8, device=device)
    dit_module.sparse_sageattn(q, k, v, mask_id=mask, is_causal=False, tensor_layout="HND")


def install_attention(dit_module, kind: str) -> None:
    dit_module.USE_BLOCK_ATTN = False  # the node's sparse_sage_attention setting
    if kind == "sdpa-block-mask":
        dit_module.sparse_sageattn = block_mask_sdpa


def model_files(models: Path, mode: str) -> dict[str, Path]:
    names = {"dit": DIT_FILE, "lq_proj": LQ_PROJ_FILE, "prompt": PROMPT_FILE}
    names["decoder"] = VAE_FILE if mode == "full" else TCDECODER_FILE
    files = {key: models / name for key, name in names.items()}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise UserError(f"{models}: missing {', '.join(missing)}; write random ones with scripts/make_checkpoint.py "
                        f"(see the flashvsr stage of scripts/gpu_check.sh)")
    return files


def build_pipeline(ref, files: dict[str, Path], mode: str, version: str, device: str, dtype: torch.dtype):
    """The node's ``init_pipeline``, from ``files``: returns (pipeline, projector class name)."""
    utils = reference_module("models.utils")
    manager = ref.ModelManager(torch_dtype=dtype, device="cpu")
    if mode == "full":
        manager.load_models([str(files["dit"]), str(files["decoder"])])
        pipe = ref.FlashVSRFullPipeline.from_model_manager(manager, device=device)
        if pipe.vae is None:
            raise UserError(f"{files['decoder']}: the reference did not recognise it as the Wan2.1 VAE (its names and "
                            f"shapes must be the published file's)")
        pipe.vae.model.encoder = None
        pipe.vae.model.conv1 = None
    else:
        manager.load_models([str(files["dit"])])
        pipeline_class = ref.FlashVSRTinyPipeline if mode == "tiny" else ref.FlashVSRTinyLongPipeline
        pipe = pipeline_class.from_model_manager(manager, device=device)
        build_tcdecoder = reference_module("models.TCDecoder").build_tcdecoder
        pipe.TCDecoder = build_tcdecoder(new_channels=TCDECODER_CHANNELS, device=device, dtype=dtype,
                                         new_latent_channels=TCDECODER_LATENT_CHANNELS)
        pipe.TCDecoder.load_state_dict(torch.load(files["decoder"], map_location=device), strict=False)
        pipe.TCDecoder.clean_mem()
    if pipe.dit is None:
        raise UserError(f"{files['dit']}: the reference did not recognise it as the FlashVSR DiT (its names and shapes "
                        f"must be the published 1.3B file's; the tiny test files are not)")
    projector = projector_class(utils, version)
    pipe.denoising_model().LQ_proj_in = projector(in_dim=3, out_dim=LQ_PROJ_OUT, layer_num=1).to(device, dtype=dtype)
    pipe.denoising_model().LQ_proj_in.load_state_dict(torch.load(files["lq_proj"], map_location="cpu"), strict=True)
    pipe.denoising_model().LQ_proj_in.to(device)
    pipe.to(device, dtype=dtype)
    pipe.enable_vram_management(num_persistent_param_in_dit=None)
    pipe.init_cross_kv(prompt_path=str(files["prompt"]))
    pipe.load_models_to_device(["dit", "vae"])
    pipe.offload_model()
    return pipe, projector.__name__


def use_seedvr_noise(pipe) -> None:
    """Make the pipeline draw its noise as seedvr-cli does (CPU generator, float32, then cast)."""
    def generate_noise(shape, seed=None, device="cpu", dtype=torch.float16):
        generator = None if seed is None else torch.Generator("cpu").manual_seed(seed)
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    pipe.generate_noise = generate_noise


# ---------------------------------------------------------------- the node's input handling


def largest_8n1_at_most(count: int) -> int:
    return 0 if count < 1 else (count - 1) // 8 * 8 + 1


def cropped_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """The upscaled frame floored to multiples of 128 (at least 128 a side)."""
    return tuple(max(SIZE_MULTIPLE, side * scale // SIZE_MULTIPLE * SIZE_MULTIPLE) for side in (height, width))


def node_lq_video(frames: torch.Tensor, scale: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """``frames`` [N, H, W, 3] float in [0, 1] (already padded to 21) -> (LQ [1, 3, F, tH, tW] on the
    CPU in ``dtype`` and [-1, 1], F)."""
    count, height, width, _ = frames.shape
    streamed = largest_8n1_at_most(count + TAIL_FRAMES)
    target_h, target_w = cropped_size(height, width, scale)
    top, left = max(0, (height * scale - target_h) // 2), max(0, (width * scale - target_w) // 2)
    lq = []
    for position in range(streamed):
        frame = frames[min(position, count - 1)].to(device).permute(2, 0, 1).unsqueeze(0)
        big = F.interpolate(frame, size=(height * scale, width * scale), mode="bicubic", align_corners=False)
        crop = big[0, :, top : top + target_h, left : left + target_w]
        lq.append(crop.to("cpu").to(dtype) * 2.0 - 1.0)
    return torch.stack(lq, 0).permute(1, 0, 2, 3).unsqueeze(0), streamed


def read_clip(path: Path, limit: int | None) -> tuple[torch.Tensor, float]:
    """(frames [N, H, W, 3] float32 in [0, 1], frames per second), decoded by seedvr-cli's reader."""
    from seedvr_cli.media.reader import VideoReader

    with VideoReader(path) as reader:
        count = reader.num_frames if limit is None else min(limit, reader.num_frames)
        pixels = reader.read(0, count)
        fps = float(reader.fps)
    scale = 65535.0 if pixels.dtype == torch.uint16 else 255.0
    return pixels[..., :3].float() / scale, fps


def write_ffv1(path: Path, frames: torch.Tensor, fps: float) -> None:
    """``frames`` [N, H, W, 3] uint8 -> lossless FFV1 (bgr0) .mkv, through a temporary sibling."""
    import av
    from fractions import Fraction

    partial = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr0"
        stream.options = {"level": "3"}
        for frame in frames.numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="bgr0")))
        container.mux(stream.encode())
    partial.replace(path)


# ---------------------------------------------------------------- run


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / GIB, 3) if device.startswith("cuda") else None


def run(args: argparse.Namespace) -> dict:
    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    elif args.attention == "sparse-sage" and os.environ.get("TRITON_INTERPRET") != "1":
        raise UserError(f"the reference's sparse_sage attention is a Triton kernel for CUDA GPUs and cannot run on "
                        f"{device}; set TRITON_INTERPRET=1 to interpret it (slow) or pass --attention sdpa-block-mask "
                        f"(a stand-in, not the reference kernel)")
    if args.output.exists() and not args.overwrite:
        raise UserError(f"{args.output} exists; pass --overwrite or pick another output")
    if args.output.suffix.lower() != ".mkv":
        raise UserError(f"{args.output}: the output is written as FFV1; name it .mkv")
    if not args.input.is_file():
        raise UserError(f"{args.input}: no such input video")
    files = model_files(args.models, args.mode)
    record = {"tool": "flashvsr-reference", "mode": args.mode, "version": args.version, "attention": args.attention,
              "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1", "noise": args.noise, "dtype": args.dtype,
              "device": device, "scale": args.scale, "interrupted": False}
    try:
        ref = import_reference(args.reference)
        install_attention(reference_module("models.wan_video_dit"), args.attention)
        frames, fps = read_clip(args.input, args.frames)
        count, height, width, _ = frames.shape
        if count < MIN_FRAMES:
            frames = torch.cat([frames, frames[-1:].expand(MIN_FRAMES - count, -1, -1, -1)])
        record.update(input=f"{width}x{height}", frames=count, input_fps=fps)
        run_pipeline(args, ref, files, frames, device, record)
    except KeyboardInterrupt:
        # Ctrl-C (the stage's time limit): report what was measured so far.
        record.update(interrupted=True, peak_vram_gib=peak_gib(device))
    return record


def run_pipeline(args: argparse.Namespace, ref, files: dict[str, Path], frames: torch.Tensor, device: str,
                 record: dict) -> None:
    """Build, call and write; fills ``record`` as it goes."""
    dtype = DTYPES[args.dtype]
    count = record["frames"]
    synchronize(device)
    started = time.perf_counter()
    pipe, record["lq_proj"] = build_pipeline(ref, files, args.mode, args.version, device, dtype)
    if args.noise == "seedvr":
        use_seedvr_noise(pipe)
    synchronize(device)
    record["load_s"] = round(time.perf_counter() - started, 3)
    record["load_peak_vram_gib"] = peak_gib(device)
    if device.startswith("cuda") and args.attention == "sparse-sage":
        started = time.perf_counter()
        warm_up_attention(reference_module("models.wan_video_dit"), pipe, device, dtype)
        synchronize(device)
        record["warmup_s"] = round(time.perf_counter() - started, 3)

    lq, streamed = node_lq_video(frames, args.scale, device, dtype)
    target_h, target_w = lq.shape[-2:]
    record.update(streamed_frames=streamed, output=f"{target_w}x{target_h}")
    if args.mode != "tiny-long":
        lq = lq.to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    started = time.perf_counter()
    topk_ratio = args.sparse_ratio * TOPK_AREA / (target_h * target_w)
    try:
        video = pipe(prompt="", negative_prompt="", cfg_scale=1.0, num_inference_steps=1, seed=args.seed,
                     tiled=args.tiled_vae, LQ_video=lq, num_frames=streamed, height=target_h, width=target_w,
                     is_full_block=False, if_buffer=True, topk_ratio=topk_ratio,
                     kv_ratio=args.kv_ratio, local_range=args.local_range, color_fix=args.color_fix,
                     unload_dit=False, force_offload=args.force_offload)
        unit = ((video.float() + 1.0) / 2.0).permute(1, 2, 3, 0)[:count].to("cpu")
        synchronize(device)
    finally:
        record["run_s"] = round(time.perf_counter() - started, 3)
    # The node drops up to 7 tail frames (its 8n+1 is at most frames + 4): fps counts what came out.
    record.update(output_frames=int(unit.shape[0]), peak_vram_gib=peak_gib(device))
    record["fps"] = round(record["output_frames"] / record["run_s"], 3)
    write_ffv1(args.output, (unit.clamp(0, 1) * 255.0).round().to(torch.uint8), record["input_fps"])
    record["output_file"] = str(args.output)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A shell that starts us in the background leaves SIGINT ignored; the time limit's Ctrl-C must
    # still become KeyboardInterrupt so the row is reported and the GPU freed.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        record = run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    line = json.dumps(record)
    print(line, flush=True)
    if args.json is not None:
        with args.json.open("a") as sink:
            sink.write(line + "\n")
    return 130 if record["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
