"""How fast can the VAE's causal 3x3x3 convolutions go on this GPU? (issue 13, a probe, not a benchmark of the VAE)

The decoder's full-resolution layers run depth first, one output frame per call: ``F.conv3d`` of a
``[1, C, 3, H, W]`` channels-last input (two carried frames + the new one) with spatial padding 1.
This times that call against other ways to compute the same numbers, at the 1080p decoder's shapes:

* ``conv3d``            the call as the VAE makes it (cuDNN autotuning off, as in workers);
* ``conv3d+bench``      the same with ``torch.backends.cudnn.benchmark = True``;
* ``conv3d x4``         four output frames per call (a ``[1, C, 6, H, W]`` input);
* ``conv2d stacked``    one ``F.conv2d`` over the three frames stacked along channels (``[1, 3C, H, W]``
                        channels-last, weight ``[Cout, 3C, 3, 3]``), the stacking copy timed apart;
* ``conv2d x3``         three ``F.conv2d`` calls, one per temporal tap, summed.

Each variant is checked against the first (max abs difference) and reported in ms per output frame
and TFLOP/s of the counted multiply-adds.

    python3 scripts/probe_vae_conv.py [--shapes 256x256@1088x1920,...] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

DEFAULT_SHAPES = "256x256@1088x1920,256x128@1088x1920,128x128@1088x1920,512x512@544x960,256x256@544x960"


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` CUDA-event-timed calls after two warm-ups."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def probe(cin: int, cout: int, height: int, width: int, repeats: int) -> list[dict]:
    device, dtype = torch.device("cuda"), torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(0)
    weight = (torch.randn(cout, cin, 3, 3, 3, device=device, generator=gen, dtype=dtype) / (27 * cin) ** 0.5)
    bias = torch.randn(cout, device=device, generator=gen, dtype=dtype) * 0.1
    weight3d = weight.contiguous(memory_format=torch.channels_last_3d)
    x3 = torch.randn(1, cin, 3, height, width, device=device, generator=gen, dtype=dtype)
    x3 = x3.contiguous(memory_format=torch.channels_last_3d)
    x6 = torch.randn(1, cin, 6, height, width, device=device, generator=gen, dtype=dtype)
    x6 = x6.contiguous(memory_format=torch.channels_last_3d)
    # [Cout, Cin, kt, 3, 3] -> [Cout, kt * Cin, 3, 3]: tap-major channels, matching the stacked input.
    weight2d = weight.permute(0, 2, 1, 3, 4).reshape(cout, 3 * cin, 3, 3).contiguous(memory_format=torch.channels_last)
    taps = [weight[:, :, k].contiguous(memory_format=torch.channels_last) for k in range(3)]
    flops_per_frame = 2 * 27 * cin * cout * height * width

    def conv3d():
        return F.conv3d(x3, weight3d, bias, 1, (0, 1, 1))

    def stack():
        # [1, C, 3, H, W] (memory T, H, W, C) -> [1, 3C, H, W] channels-last (memory H, W, 3, C).
        return x3[0].permute(2, 3, 1, 0).reshape(height, width, 3 * cin).permute(2, 0, 1)[None]

    stacked = stack()

    def conv2d_stacked():
        return F.conv2d(stacked, weight2d, bias, 1, 1)

    frames = [x3[:, :, k] for k in range(3)]

    def conv2d_taps():
        out = F.conv2d(frames[0], taps[0], bias, 1, 1)
        out += F.conv2d(frames[1], taps[1], None, 1, 1)
        out += F.conv2d(frames[2], taps[2], None, 1, 1)
        return out

    reference = conv3d()[:, :, 0].float()
    rows = []

    def record(name, fn, frames_out=1, compare=None):
        ms = timed(fn, repeats) / frames_out
        if name.endswith("only"):
            rows.append({"shape": f"{cin}x{cout}@{height}x{width}", "variant": name, "ms_per_frame": round(ms, 3)})
            return
        out = compare() if compare else fn()
        if out.ndim == 5:
            out = out[:, :, 0]
        diff = float((out.float() - reference).abs().max())
        rows.append({"shape": f"{cin}x{cout}@{height}x{width}", "variant": name, "ms_per_frame": round(ms, 3),
                     "tflops": round(flops_per_frame / ms / 1e9, 1), "max_abs_vs_conv3d": diff})

    def conv3d_x4():
        return F.conv3d(x6, weight3d, bias, 1, (0, 1, 1))

    def conv3d_x4_first():  # its first output frame, for the comparison with the one-frame conv
        return F.conv3d(x6[:, :, :3].contiguous(memory_format=torch.channels_last_3d), weight3d, bias, 1, (0, 1, 1))

    torch.backends.cudnn.benchmark = False
    record("conv3d", conv3d)
    record("conv3d x4", conv3d_x4, frames_out=4, compare=conv3d_x4_first)
    record("stack copy only", stack)
    record("conv2d stacked", conv2d_stacked)
    record("conv2d x3", conv2d_taps)
    torch.backends.cudnn.benchmark = True
    record("conv3d+bench", conv3d)
    record("conv3d x4+bench", conv3d_x4, frames_out=4, compare=conv3d_x4_first)
    record("conv2d stacked+bench", conv2d_stacked)
    torch.backends.cudnn.benchmark = False
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="CINxCOUT@HxW, comma-separated")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, "cuDNN", torch.backends.cudnn.version())
    for spec in args.shapes.split(","):
        channels, size = spec.split("@")
        cin, cout = map(int, channels.split("x"))
        height, width = map(int, size.split("x"))
        for row in probe(cin, cout, height, width, args.repeats):
            print(json.dumps(row))
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
