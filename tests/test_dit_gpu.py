"""NaDiT on a CUDA device: fixture parity in float32 (TF32 off), bf16 bound, backends agree."""

from __future__ import annotations

import pytest
import torch
from conftest import shared_path
from safetensors.torch import load_file

from seedvr_cli.parity import dit as dit_parity
from seedvr_cli.parity.tolerances import dit_tolerance

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _run(model, case, **kwargs):
    args = [case[k].cuda() for k in ("vid", "txt", "vid_shape", "txt_shape", "timestep")]
    with torch.no_grad():
        return model(*args, **kwargs).float().cpu()


@pytest.mark.parametrize("variant", ["3b", "7b"])
def test_fixture_cases_on_gpu(variant):
    model_dir = shared_path("fixtures", "dit", f"tiny_{variant}")
    model = dit_parity.load_fixture_model(model_dir).cuda()
    for case_path in sorted(model_dir.glob("case_*.safetensors")):
        case = load_file(case_path)
        out = _run(model, case)
        # The DiT fixtures' stated float32 bound, for CPUs and for GPUs with TF32 off alike.
        bound = dit_tolerance(case["out"])
        torch.testing.assert_close(out, case["out"], rtol=0, atol=bound, msg=case_path.name)
        reference = _run(model, case, attention_backend="reference")
        torch.testing.assert_close(reference, case["out"], rtol=0, atol=bound, msg=case_path.name)
    bf16 = model.to(torch.bfloat16)
    for case_path in sorted(model_dir.glob("case_*.safetensors")):
        case = load_file(case_path)
        # Same bound as the CPU bf16 test (measured there: max abs <= 0.054).
        assert (_run(bf16, case) - case["out"]).abs().max() < 0.1, case_path.name
