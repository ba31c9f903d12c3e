"""The worker's DiT fast-path wiring: --attention picks a backend per device (with a note where it
falls back), --compile compiles the blocks and reports the compile time once."""

from __future__ import annotations

import pytest
import torch

import seedvr_cli.run.processor as processor_module
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.parallel.tasks import plan_chunks
from seedvr_cli.pipeline.plan import plan_frame_size
from seedvr_cli.pipeline.temporal import plan_windows
from seedvr_cli.pipeline.window import WindowSettings
from seedvr_cli.run.compile import compile_blocks
from seedvr_cli.run.models import ModelFiles
from seedvr_cli.run.processor import InputContext, SeedVRProcessorFactory

CPU = DeviceSpec("cpu", 0)


@pytest.fixture(scope="module")
def files(checkpoints):
    dit, vae = checkpoints
    return ModelFiles(dit, vae, dit.parent / "pos_emb.safetensors")


def _chunk():
    frames = torch.randint(0, 256, (5, 24, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    plan = plan_windows(5, batch_size=5)
    task = plan_chunks(plan.windows, windows_per_chunk=1, shares=plan.chunk_shares)[0]
    size = plan_frame_size(24, 32, resolution=32)
    return frames, task, InputContext(plan, WindowSettings(frame_size=size, dtype=torch.float32))


def test_attention_the_device_lacks_falls_back_with_a_note(files):
    processor = SeedVRProcessorFactory(files, dtype="fp32", attention_backend="flash")(CPU)
    assert processor.dit.attention_backend == "sdpa"
    assert len(processor.notes) == 1 and processor.notes[0].startswith("cpu: --attention flash is not available")
    auto = SeedVRProcessorFactory(files, dtype="fp32", attention_backend="auto")(CPU)
    assert auto.dit.attention_backend == "sdpa" and auto.notes == []


def test_compile_compiles_the_blocks_and_reports_the_time_once(files, monkeypatch):
    torch._dynamo.reset()
    compiled = []

    def compile_eagerly(model):
        # The dynamo path without inductor's code generation (minutes on two CPU cores).
        compiled.append(model)
        compile_blocks(model, backend="eager")

    monkeypatch.setattr(processor_module, "compile_blocks", compile_eagerly)
    frames, task, context = _chunk()
    expected = SeedVRProcessorFactory(files, dtype="fp32")(CPU).process(task, frames, context)
    processor = SeedVRProcessorFactory(files, dtype="fp32", compile=True)(CPU)
    assert compiled == [processor.dit]
    for _ in range(2):
        out = processor.process(task, frames, context)
        for name in ("head", "body", "tail"):
            assert (getattr(out, name) == getattr(expected, name)).all()
    assert len([n for n in processor.notes if "compiled the DiT blocks in" in n]) == 1
    torch._dynamo.reset()
