"""The worker's DiT fast-path wiring: --attention picks a backend per device (with a note where it
falls back), --compile compiles the blocks and reports the compile time once."""

from __future__ import annotations

import torch
from conftest import one_window_chunk

import seedvr_cli.run.processor as processor_module
from seedvr_cli.parallel.devices import DeviceSpec
from seedvr_cli.run.compile import compile_blocks
from seedvr_cli.run.processor import SeedVRProcessorFactory

CPU = DeviceSpec("cpu", 0)


def test_attention_the_device_lacks_falls_back_with_a_note(model_files):
    processor = SeedVRProcessorFactory(model_files, dtype="fp32", attention_backend="flash")(CPU)
    assert processor.dit.attention_backend == "sdpa"
    assert len(processor.notes) == 1 and processor.notes[0].startswith("cpu: --attention flash is not available")
    auto = SeedVRProcessorFactory(model_files, dtype="fp32", attention_backend="auto")(CPU)
    assert auto.dit.attention_backend == "sdpa" and auto.notes == []


def test_compile_compiles_the_blocks_and_reports_the_time_once(model_files, monkeypatch):
    torch._dynamo.reset()
    compiled = []

    def compile_eagerly(model):
        # The dynamo path without inductor's code generation (minutes on two CPU cores).
        compiled.append(model)
        compile_blocks(model, backend="eager")

    monkeypatch.setattr(processor_module, "compile_blocks", compile_eagerly)
    frames, task, context = one_window_chunk()
    expected = SeedVRProcessorFactory(model_files, dtype="fp32")(CPU).process(task, frames, context)
    processor = SeedVRProcessorFactory(model_files, dtype="fp32", compile=True)(CPU)
    assert compiled == [processor.dit]
    for _ in range(2):
        out = processor.process(task, frames, context)
        for name in ("head", "body", "tail"):
            assert (getattr(out, name) == getattr(expected, name)).all()
    assert len([n for n in processor.notes if "compiled the DiT blocks in" in n]) == 1
    torch._dynamo.reset()
