"""--vram auto in the worker: a chunk that runs out of GPU memory steps down to the next saver and is
retried; with nothing left it fails with one line that says what to change."""

from __future__ import annotations

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


def test_with_nothing_left_the_chunk_fails_in_one_line(model_files, monkeypatch):
    frames, task, context = one_window_chunk()
    _run_out_of_memory(monkeypatch, times=10**6)
    processor = _processor(model_files)
    with pytest.raises(ChunkOutOfMemory, match=r"ran out of GPU memory \(CUDA out of memory. Tried to allocate 2.00 GiB\) at .* with 5-frame "
                                               r"windows and DiT offload during the VAE phases.*lower --batch-size"):
        processor.process(task, frames, context)


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
