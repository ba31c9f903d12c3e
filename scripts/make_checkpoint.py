#!/usr/bin/env python
"""Write a random-weight SeedVR2 or FlashVSR checkpoint with the published names, dtypes and file layout.

    python scripts/make_checkpoint.py --variant tiny-3b --format gguf-q4_k_m --out /tmp/dit.gguf
    python scripts/make_checkpoint.py --variant 7b --format fp16 --out /data/7b.safetensors --device cuda
    python scripts/make_checkpoint.py --variant tiny-tcdecoder --format fp32-pth --out /tmp/TCDecoder.ckpt

FlashVSR decoders: ``tcdecoder`` / ``wan2.1-vae`` write ``TCDecoder.ckpt`` / ``Wan2.1_VAE.pth`` at real
size (the VAE with its encoder, as published), ``tiny-tcdecoder`` / ``tiny-wan2.1-vae`` at the parity
fixtures' size; only ``--format fp32-pth``, the published files' format.

    python scripts/make_checkpoint.py --variant flashvsr-v1.1 --format bf16 --out /data/FlashVSR-v1.1

FlashVSR variants (``flashvsr-v1.0/v1.1``, tiny test sizes ``tiny-flashvsr-v1.0/v1.1``) write
``diffusion_pytorch_model_streaming_dmd.safetensors`` and ``LQ_proj_in.ckpt`` into the ``--out``
folder, in bf16 (default), fp16 or fp32. SeedVR2 DiT variants also get a stand-in
``pos_emb.safetensors`` (key ``emb``, 58 x txt_in_dim) beside the output unless one exists.
Never a real model: for tests and benchmarks only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seedvr_cli.weights import synthesize_flashvsr_decoders as flashvsr_decoders  # noqa: E402
from seedvr_cli.weights.synthesize import FORMATS, VARIANTS, write_checkpoint  # noqa: E402
from seedvr_cli.weights.synthesize_flashvsr import (  # noqa: E402
    FLASHVSR_FORMATS,
    FLASHVSR_VARIANTS,
    write_flashvsr_checkpoint,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, choices=VARIANTS + FLASHVSR_VARIANTS + flashvsr_decoders.VARIANTS)
    parser.add_argument("--format", choices=sorted(set(FORMATS) | set(FLASHVSR_FORMATS) | set(flashvsr_decoders.FORMATS)),
                        dest="fmt", help="required for SeedVR2 variants; FlashVSR DiT: bf16 (default), fp16 or fp32; "
                                         "FlashVSR decoders: fp32-pth (default)")
    parser.add_argument("--out", required=True, type=Path, help="output file (FlashVSR DiT: output folder)")
    parser.add_argument("--seed", type=int, default=0, help="values depend only on (seed, tensor name)")
    parser.add_argument("--device", default="cpu", help="where values are generated and quantized (cpu, cuda)")
    parser.add_argument("--gguf-prefix", action="store_true",
                        help="store GGUF names with ComfyUI's model.diffusion_model. prefix")
    parser.add_argument("--no-text-embedding", action="store_true", help="do not write pos_emb.safetensors")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.variant in FLASHVSR_VARIANTS:
        fmt = args.fmt or "bf16"
        if fmt not in FLASHVSR_FORMATS:
            parser.error(f"FlashVSR variants take --format {', '.join(FLASHVSR_FORMATS)}, not {fmt}")
        try:
            paths = write_flashvsr_checkpoint(args.variant, args.out, fmt=fmt, seed=args.seed, device=args.device)
        except FileExistsError as err:
            parser.error(str(err))
        size = sum(p.stat().st_size for p in paths)
        print(f"{args.out}: {args.variant} {fmt}, {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")
        return 0
    if args.variant in flashvsr_decoders.VARIANTS:
        args.fmt = args.fmt or flashvsr_decoders.FORMATS[0]
        if args.fmt not in flashvsr_decoders.FORMATS:
            parser.error(f"--variant {args.variant} is written as {' or '.join(flashvsr_decoders.FORMATS)} only "
                         f"(the published file's format), not {args.fmt}")
        path = flashvsr_decoders.write_decoder_checkpoint(args.variant, args.out, seed=args.seed, device=args.device)
    else:
        if args.fmt is None:
            parser.error("--format is required for SeedVR2 variants")
        path = write_checkpoint(args.variant, args.fmt, args.out, seed=args.seed, device=args.device,
                                text_embedding=not args.no_text_embedding, gguf_prefix=args.gguf_prefix)
    size = path.stat().st_size
    print(f"{path}: {args.variant} {args.fmt}, {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
