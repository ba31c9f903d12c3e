"""--attention: what each choice runs on a device, and the one-line note when it cannot."""

from __future__ import annotations

import pytest
import torch

from seedvr_cli.models import attention_choice
from seedvr_cli.models.attention import ATTENTION_BACKENDS
from seedvr_cli.models.attention_choice import choose_attention
from seedvr_cli.pipeline.choices import ATTENTION_CHOICES

CPU = torch.device("cpu")


def test_every_choice_but_auto_is_a_backend():
    assert set(ATTENTION_CHOICES) - {"auto"} <= set(ATTENTION_BACKENDS)


def test_auto_on_the_cpu_is_sdpa_without_a_note():
    assert choose_attention("auto", CPU) == ("sdpa", None)


@pytest.mark.parametrize("name", ["flash", "flex"])
def test_missing_backend_falls_back_to_sdpa_with_one_line(name):
    chosen, note = choose_attention(name, CPU)
    assert chosen == "sdpa"
    assert note.startswith(f"--attention {name} is not available (") and note.endswith("using sdpa")
    assert "\n" not in note


def test_auto_takes_flash_where_it_runs(monkeypatch):
    monkeypatch.setattr(attention_choice, "varlen_available", lambda device, dtype: None)
    assert choose_attention("auto", torch.device("cuda")) == ("flash", None)


def test_flash_needs_half_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cuda = torch.device("cuda")
    assert choose_attention("auto", cuda, torch.bfloat16) == ("flash", None)
    assert choose_attention("auto", cuda, torch.float32) == ("sdpa", None)
    chosen, note = choose_attention("flash", cuda, torch.float32)
    assert chosen == "sdpa" and "take fp16 or bf16, not float32" in note


def test_available_backend_is_kept(monkeypatch):
    monkeypatch.setitem(attention_choice._MISSING, "flex", lambda device, dtype: None)
    assert choose_attention("flex", torch.device("cuda")) == ("flex", None)
    assert choose_attention("sdpa", CPU) == ("sdpa", None)
