"""--vram auto in the worker: a chunk that runs out of GPU memory steps down to the next saver and is
retried, then to shorter sub-windows inside each planned window; with nothing left it fails with one
line that says what to change."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import one_window_chunk

import seedvr_cli.run.processor as processor_module
from seedvr_cli.config import MemorySettings
from seedvr_cli.memory.blockswap import BlockSwapper
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.run.processor import ChunkOutOfMemory, SeedVRProcessorFactory
from seedvr_cli.run.vram import ModelFacts


def _processor(model_files, **memory):
    facts = ModelFacts("tiny-3b", "tiny-vae", 2.0, "test")
    factory = SeedVRProcessorFactory(model_files, dtype="fp32", memory=MemorySettings(**memory), facts=facts)
    return factory(DeviceSpec("cpu", 0))


def _run_out_of_memory(monkeypatch, times: int) -> list[int]:
    """Make the first ``times`` windows raise CUDA's out-of-memory error."""
    real = processor_module.upscale_window
    calls = [0]

    def window(*args, **kwargs):
        calls[0] += 1
        if calls[0] <= times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(processor_module, "upscale_window", window)
    return calls


def test_a_chunk_that_runs_out_of_memory_is_retried_with_the_dit_offloaded_and_the_same_pictures(model_files, monkeypatch):
    from seedvr_cli.memory.offload import OffloadedDiT

    frames, task, context = one_window_chunk()
    expected = _processor(model_files).process(task, frames, context)

    calls = _run_out_of_memory(monkeypatch, times=1)
    processor = _processor(model_files)
    result = processor.process(task, frames, context)
    assert calls[0] == 2
    assert processor.memory.offloads_dit and isinstance(processor.dit, OffloadedDiT)
    assert len(processor.notes) == 1 and "retrying it and the rest with the DiT in host memory" in processor.notes[0]
    # The offload changes no pixel.
    for part in ("head", "body", "tail"):
        assert (getattr(result, part) == getattr(expected, part)).all()


def test_blockswap_added_to_an_offloaded_dit_takes_its_blocks_and_keeps_the_pictures(model_files, monkeypatch):
    from dataclasses import replace

    from seedvr_cli.run.fit import Candidate

    frames, task, context = one_window_chunk()
    expected = _processor(model_files).process(task, frames, context)
    _run_out_of_memory(monkeypatch, times=1)
    processor = _processor(model_files, dit_offload_device="cpu")
    moved_before = len(processor.dit_weights.tensors)
    swapped = replace(processor.memory, blocks_to_swap=4, swap_io_components=True)
    monkeypatch.setattr(processor_module, "step_down", lambda *args: Candidate(swapped, 5, "BlockSwap"))
    result = processor.process(task, frames, context)
    assert isinstance(processor.dit.model.block_runner, BlockSwapper)
    # The swapped blocks are the swapper's now; the offload moves only what stays resident.
    assert 0 < len(processor.dit_weights.tensors) < moved_before
    for part in ("head", "body", "tail"):
        assert (getattr(result, part) == getattr(expected, part)).all()


def test_a_step_to_vae_tiles_and_offload_rewraps_the_vae(model_files, monkeypatch):
    # The tiny frames are smaller than any tile the fit offers, so the step is given here.
    from dataclasses import replace

    from seedvr_cli.memory.offload import OffloadedVAE
    from seedvr_cli.memory.tiling import TiledVAE
    from seedvr_cli.run.fit import Candidate

    frames, task, context = one_window_chunk()
    _run_out_of_memory(monkeypatch, times=1)
    processor = _processor(model_files)
    tiled = replace(processor.memory, vae_tiling="on", vae_tile_size=64, vae_tile_overlap=16, vae_offload_device="cpu")
    monkeypatch.setattr(processor_module, "step_down", lambda *args: Candidate(tiled, 5, "VAE tiles of 64 px + VAE offload"))
    processor.process(task, frames, context)
    assert isinstance(processor.vae, OffloadedVAE) and isinstance(processor.vae.codec, TiledVAE)
    assert processor.vae.codec.tile_size == (64, 64) and processor.memory == tiled
    assert "retrying it and the rest with VAE tiles of 64 px + VAE offload" in processor.notes[0]


def test_a_step_to_dit_tiles_wraps_the_swapped_dit(model_files, monkeypatch):
    from dataclasses import replace

    from seedvr_cli.memory.dit_tiling import TiledDiT
    from seedvr_cli.run.fit import Candidate

    frames, task, context = one_window_chunk()
    _run_out_of_memory(monkeypatch, times=1)
    processor = _processor(model_files)
    tiled = replace(processor.memory, blocks_to_swap=4, swap_io_components=True, dit_tiling="on",
                    dit_tile_size=256, dit_tile_overlap=16)
    monkeypatch.setattr(processor_module, "step_down", lambda *args: Candidate(tiled, 5, "DiT tiles"))
    processor.process(task, frames, context)
    assert isinstance(processor.dit, TiledDiT) and isinstance(processor.dit.model.block_runner, BlockSwapper)


def test_dit_offload_wraps_outside_the_dit_tiles(model_files):
    from seedvr_cli.memory.dit_tiling import TiledDiT
    from seedvr_cli.memory.offload import OffloadedDiT

    processor = _processor(model_files, dit_offload_device="cpu", dit_tiling="on", dit_tile_size=256, dit_tile_overlap=16)
    # One upload of the weights per window, whatever the number of tiles.
    assert isinstance(processor.dit, OffloadedDiT) and isinstance(processor.dit.model, TiledDiT)


def _out_of_memory_above(processor, frames: int) -> list[int]:
    """A stand-in VAE whose decode runs out of memory for windows of more than ``frames`` frames;
    returns the window lengths it was asked to decode."""
    real = processor.vae_module.decode
    asked = []

    def decode(z, *args, **kwargs):
        asked.append(4 * (z.shape[2] - 1) + 1)
        if asked[-1] > frames:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(z, *args, **kwargs)

    processor.vae_module.decode = decode
    return asked


def _two_chunks():
    """15 random frames in two overlapping 9-frame windows, one chunk each."""
    from dataclasses import replace

    from seedvr_cli.parallel.tasks import plan_chunks
    from seedvr_cli.pipeline.temporal import plan_windows

    frames, _, context = one_window_chunk()
    frames = torch.randint(0, 256, (15, *frames.shape[1:]), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(4))
    plan = plan_windows(15, batch_size=9, overlap=3)
    tasks = plan_chunks(plan.windows, windows_per_chunk=1, shares=plan.chunk_shares)
    return frames, tasks, replace(context, plan=plan)


def test_with_no_saver_left_the_windows_are_computed_in_shorter_sub_windows(model_files):
    frames, tasks, context = _two_chunks()
    expected = [_processor(model_files).process(task, frames, context) for task in tasks]
    processor = _processor(model_files)
    asked = _out_of_memory_above(processor, 5)
    result = processor.process(tasks[0], frames, context)
    # 9 frames: out of memory; + DiT offload (the last saver these tiny sizes need): out of memory
    # again; then the 9-frame window as sub-windows of 5 frames.
    assert asked[:2] == [9, 9] and set(asked[2:]) == {5}
    # The note says in which phase the window ran out, with torch's own first sentences.
    assert processor.notes[-1] == ("chunk 0 ran out of GPU memory (in the decode: CUDA out of memory. Tried to "
                                   "allocate 2.00 GiB); retrying it and the rest with 5-frame windows "
                                   "inside each 9-frame window (pictures change)")
    assert processor.notes[-2].startswith("chunk 0 ran out of GPU memory (in the decode: ")
    assert result.shape == expected[0].shape and result.frames == tasks[0].out_stop - tasks[0].out_start
    assert all(np.isfinite(part).all() for part in (result.head, result.tail))
    # The rest of the run keeps the sub-windows: the next chunk never runs out of memory.
    asked.clear()
    notes = len(processor.notes)
    later = processor.process(tasks[1], frames, context)
    assert set(asked) == {5} and len(processor.notes) == notes and later.shape == expected[1].shape


def test_sub_windows_step_down_to_the_shortest_then_the_chunk_fails_in_one_line(model_files):
    frames, task, context = one_window_chunk()
    processor = _processor(model_files)
    asked = _out_of_memory_above(processor, 0)
    with pytest.raises(ChunkOutOfMemory) as failure:
        processor.process(task, frames, context)
    message = str(failure.value)
    assert "\n" not in message
    assert re.fullmatch(r"cpu ran out of GPU memory \(in the decode: CUDA out of memory. Tried to allocate 2.00 GiB\) at \d+x\d+ with "
                        r"1-frame windows inside each 5-frame window and DiT offload during the VAE phases; "
                        r"lower --resolution, or free GPU memory for it", message)
    # 5 frames, 5 with the DiT offloaded, then 1-frame sub-windows (the shortest step).
    assert asked == [5, 5, 1]
    assert processor.notes[-1].endswith("with 1-frame windows inside each 5-frame window (pictures change)")


def test_manual_memory_settings_never_step_down(model_files, monkeypatch):
    frames, task, context = one_window_chunk()
    _run_out_of_memory(monkeypatch, times=1)
    processor = _processor(model_files, vram="manual")
    with pytest.raises(ChunkOutOfMemory, match="no memory saver"):
        processor.process(task, frames, context)
    assert not processor.notes


def test_conv_rings_are_the_vaes_only_when_asked(model_files):
    assert _processor(model_files).vae_module.conv_rings is False
    assert _processor(model_files, vae_conv_rings=True).vae_module.conv_rings is True
