"""How far does a tiled VAE land from the untiled one, and is the difference larger at the seams?
(issue 12, item 3)

Real content (the shared photo, resized by ``--scale``) through the fixture's tiny VAE (the real
architecture with random weights: no trained weights can be downloaded here), one frame, float32
on the CPU. For encode (pixels -> posterior mean) and decode (that mean -> pixels), tiled with
``memory.tiling`` against untiled, it prints the mean absolute difference over the whole frame, in
the seam bands (positions two tiles cover) and in the tile interiors (the rest), and the mean
difference by distance from the nearest interior tile edge.

Seams and interiors hold different content, so the script also compares them at the same
positions: a second tile layout, shifted by half a stride, puts its interiors where the first one
has its seams (and the other way round); "same positions" gives the error of the layout that has a
seam there over the error of the layout that has a tile interior there, per direction and pooled.

Encode and decode each run two ways: with the tiles sharing the statistics of a half-size pass
(``shared``, the default; ``memory.shared_statistics``) and with each tile on its own statistics
(``own``, as the reference). The decode also runs the reference's tiling (every tile through the
whole decoder, own statistics). Then, for encode and the default decode, a diagnostic that records
the shared statistics from the untiled pass itself ("frame statistics"): what would remain if the
statistics were exact (only the tiles' cut receptive fields).

    uv run python scripts/vae_tile_seams.py [--scale 4] [--tile 1024] [--overlap 128] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "kernels")]

from seedvr_cli.media.images import read_image  # noqa: E402
from seedvr_cli.memory import tiling  # noqa: E402
from seedvr_cli.memory.tiling import TileSpan, _latent_grid, tile_spans, tiled_decode, tiled_encode  # noqa: E402
from seedvr_cli.parity.vae import load_fixture_vae  # noqa: E402


def seam_mask(latent: tuple[int, int], tile: int, overlap: int, factor: int) -> torch.Tensor:
    """Positions (at ``factor`` pixels per latent) that two or more tiles cover."""
    (tile_h, tile_w), (overlap_h, overlap_w) = _latent_grid((tile, tile), (overlap, overlap), 8)
    mask = torch.zeros(latent[0] * factor, latent[1] * factor, dtype=torch.bool)
    for axis, spans in ((0, tile_spans(latent[0], tile_h, overlap_h)), (1, tile_spans(latent[1], tile_w, overlap_w))):
        for before, after in zip(spans, spans[1:]):
            band = slice(after.start * factor, before.stop * factor)
            if axis == 0:
                mask[band, :] = True
            else:
                mask[:, band] = True
    return mask


def edge_distance(latent: tuple[int, int], tile: int, overlap: int, factor: int) -> torch.Tensor:
    """Per position, the distance (in latents) to the nearest tile edge that is not a frame edge."""
    (tile_h, tile_w), (overlap_h, overlap_w) = _latent_grid((tile, tile), (overlap, overlap), 8)
    distances = []
    for size, tile_n, overlap_n in ((latent[0], tile_h, overlap_h), (latent[1], tile_w, overlap_w)):
        cuts = {span.start for span in tile_spans(size, tile_n, overlap_n) if span.start > 0}
        cuts |= {span.stop for span in tile_spans(size, tile_n, overlap_n) if span.stop < size}
        position = (torch.arange(size * factor) + 0.5) / factor
        if cuts:
            distances.append(torch.stack([(position - c).abs() for c in cuts]).min(0).values)
        else:
            distances.append(torch.full((size * factor,), float("inf")))
    return torch.minimum(distances[0][:, None], distances[1][None, :])


def shifted_spans(latent_size: int, tile: int, overlap: int, shift: int) -> list[TileSpan]:
    """``tile_spans`` with the second tile starting ``shift`` latents in (the first one shorter)."""
    stride = max(1, tile - overlap)
    first_stop = min(shift + overlap, latent_size)
    spans = [TileSpan(0, first_stop, False, first_stop < latent_size)]
    start = shift
    while start + overlap < latent_size:
        stop = min(start + tile, latent_size)
        spans.append(TileSpan(start, stop, True, stop < latent_size))
        start += stride
    return spans


@contextmanager
def tile_layout_shifted(by: int):
    """``memory.tiling`` lays its tiles out shifted by ``by`` latents while inside."""
    original = tiling.tile_spans
    tiling.tile_spans = lambda size, tile, overlap: shifted_spans(size, tile, overlap, by)
    try:
        yield
    finally:
        tiling.tile_spans = original


def covered_twice(spans: list[TileSpan], size: int, factor: int) -> torch.Tensor:
    cover = torch.zeros(size * factor)
    for span in spans:
        cover[span.start * factor : span.stop * factor] += 1
    return cover > 1


def same_positions(errors: tuple[torch.Tensor, torch.Tensor], seams: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Seam error over interior error where one layout has a seam and the other an interior."""
    result, sums = {}, [0.0, 0.0]
    for name, (a, b) in (("seams of the first layout", (0, 1)), ("seams of the shifted layout", (1, 0))):
        where = seams[a] & ~seams[b]
        seam, interior = float(errors[a][where].mean()), float(errors[b][where].mean())
        result[name] = round(seam / interior, 3)
        sums[0] += seam
        sums[1] += interior
    result["pooled"] = round(sums[0] / sums[1], 3)
    return result


@contextmanager
def frame_statistics():
    """The tiles share the statistics of one untiled pass over the whole input at full size (not
    of a half-size pass, nor gathered in tiles): exact statistics."""
    saved = tiling.half_size, tiling.tiled_encode, tiling.tiled_decode
    tiling.half_size = lambda x: x
    # The gathering pass calls these through the module: there they become one whole pass.
    tiling.tiled_encode = lambda vae, x, *rest: vae.encode_moments(x)
    tiling.tiled_decode = lambda vae, z, *rest: vae.decode(z)
    try:
        yield
    finally:
        tiling.half_size, tiling.tiled_encode, tiling.tiled_decode = saved


def summarise(difference: torch.Tensor, seams: torch.Tensor, distance: torch.Tensor) -> dict:
    per_position = difference.abs().mean(dim=(0, 1, 2))  # over batch, channels, frames
    bands = [0, 2, 4, 8, 16, 32, float("inf")]
    profile = {}
    for low, high in zip(bands, bands[1:]):
        inside = (distance >= low) & (distance < high)
        if inside.any():
            profile[f"{low}-{high}"] = round(float(per_position[inside].mean()), 5)
    seam, interior = float(per_position[seams].mean()), float(per_position[~seams].mean())
    return {"mean": round(float(per_position.mean()), 5), "max": round(float(difference.abs().max()), 4),
            "seam": round(seam, 5), "interior": round(interior, 5), "seam_to_interior": round(seam / interior, 3) if interior > 0 else None,
            "by_latents_from_a_cut": profile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="resize the 478x320 photo by this factor")
    parser.add_argument("--tile", type=int, default=256, help="tile size in pixels")
    parser.add_argument("--overlap", type=int, default=128, help="tile overlap in pixels")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    args = parser.parse_args()
    shared = Path(os.environ.get("SEEDVR_SHARED_DIR", ROOT.parent / "shared"))
    if not (shared / "fixtures" / "vae").is_dir():
        sys.exit("needs ../shared (or SEEDVR_SHARED_DIR): the photo and the fixture VAE live there")
    vae = load_fixture_vae(shared / "fixtures" / "vae")
    image = read_image(shared / "media" / "Sadhu_320x478.png", deep=False, alpha=False)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    pixels = F.interpolate(pixels, scale_factor=args.scale, mode="bilinear", align_corners=False)
    height, width = (pixels.shape[-2] // 8) * 8, (pixels.shape[-1] // 8) * 8
    x = pixels[..., :height, :width].clamp(-1, 1)[:, :, None]
    size, overlap = (args.tile, args.tile), (args.overlap, args.overlap)
    latent = (height // 8, width // 8)
    results: dict = {"frame": f"{width}x{height}", "tile": args.tile, "overlap": args.overlap}
    with torch.inference_mode():
        mean, _ = vae.encode(x)
        decoded = vae.decode(mean)
        geometry = {
            "encode": (seam_mask(latent, args.tile, args.overlap, 1), edge_distance(latent, args.tile, args.overlap, 1)),
            "decode": (seam_mask(latent, args.tile, args.overlap, 8), edge_distance(latent, args.tile, args.overlap, 8)),
        }
        encodes = {"shared": lambda: tiled_encode(vae, x, size, overlap)[0],
                   "own": lambda: tiled_encode(vae, x, size, overlap, shared_statistics=False)[0]}
        decodes = {"shared": lambda: tiled_decode(vae, mean, size, overlap),
                   "own": lambda: tiled_decode(vae, mean, size, overlap, shared_statistics=False),
                   "reference": lambda: tiled_decode(vae, mean, size, overlap, False, False)}
        for name, run in encodes.items():
            results[f"encode, {name}"] = summarise(run() - mean, *geometry["encode"])
        for name, run in decodes.items():
            results[f"decode, {name}"] = summarise(run() - decoded, *geometry["decode"])
        with frame_statistics():
            results["encode, frame statistics"] = summarise(encodes["shared"]() - mean, *geometry["encode"])
            results["decode, frame statistics"] = summarise(decodes["shared"]() - decoded, *geometry["decode"])
        # The same comparison at the same positions, with a layout shifted by half a stride.
        (tile_h, tile_w), (overlap_h, overlap_w) = _latent_grid(size, overlap, 8)
        shift = max(1, (tile_h - overlap_h) // 2)
        for direction, runs, reference, factor in (("encode", encodes, mean, 1), ("decode", decodes, decoded, 8)):
            for name in ("shared", "own"):
                errors, seams = [], []
                for by in (None, shift):
                    if by is None:
                        out = runs[name]()
                        rows, cols = tile_spans(latent[0], tile_h, overlap_h), tile_spans(latent[1], tile_w, overlap_w)
                    else:
                        with tile_layout_shifted(by):
                            out = runs[name]()
                        rows, cols = shifted_spans(latent[0], tile_h, overlap_h, by), shifted_spans(latent[1], tile_w, overlap_w, by)
                    errors.append((out - reference).abs().mean(dim=(0, 1, 2)))
                    seams.append(covered_twice(rows, latent[0], factor)[:, None] | covered_twice(cols, latent[1], factor)[None, :])
                results[f"{direction}, {name}, same positions"] = same_positions(tuple(errors), tuple(seams))
    results["signal_std"] = {"latent": round(float(mean.std()), 4), "pixels": round(float(decoded.std()), 4)}
    if args.json:
        print(json.dumps(results))
        return
    print(f"{results['frame']}, tiles {args.tile} px, overlap {args.overlap} px; signal std {results['signal_std']}")
    for name in ("encode, shared", "encode, own", "encode, frame statistics", "decode, shared", "decode, own",
                 "decode, reference", "decode, frame statistics"):
        r = results[name]
        print(f"{name:28s}: mean {r['mean']:.5f} max {r['max']:.4f} seam {r['seam']:.5f} "
              f"interior {r['interior']:.5f} ratio {r['seam_to_interior']}  by distance {r['by_latents_from_a_cut']}")
    for name in ("encode, shared", "encode, own", "decode, shared", "decode, own"):
        print(f"{name + ', same positions':36s}: seam / interior error {results[name + ', same positions']}")

if __name__ == "__main__":
    main()
