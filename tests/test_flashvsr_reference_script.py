"""scripts/flashvsr_reference.py without the reference checkout: its input preparation (the node's),
its CPU stand-in for the sparse_sage attention, its FFV1 output, and its one-line refusals."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seedvr_cli.pipeline.flashvsr.preprocess import streamed_frames, upscale_and_crop
from media_factory import make_video

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "flashvsr_reference.py"
# Where gpu_check.sh's flashvsr-ref stage expects the exported reference (not in git).
CHECKOUT = SCRIPT.parents[1] / ".ref" / "ComfyUI-FlashVSR_Ultra_Fast"


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("flashvsr_reference_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("frames", "streamed"), [(21, 25), (28, 25), (29, 33), (45, 49), (46, 49)])
def test_node_streams_the_largest_8n1_within_four_frames_more(driver, frames, streamed):
    video = torch.rand(frames, 32, 40, 3)
    lq, count = driver.node_lq_video(video, 4, "cpu", torch.float32)
    assert count == streamed and lq.shape == (1, 3, streamed, 128, 128)
    last = driver.node_lq_video(video[-1:], 4, "cpu", torch.float32)[0][:, :, 0]
    # Positions past the clip repeat its last frame; a clip longer than that keeps only its start.
    assert torch.equal(lq[:, :, -1], last) == (streamed > frames)


def test_node_preparation_matches_ours_where_the_frame_counts_agree(driver):
    # 45 frames: the node's 8n+1 <= 49 and ours >= 49 are the same, so the LQ videos must be too.
    video = torch.rand(45, 40, 70, 3)
    lq, count = driver.node_lq_video(video, 4, "cpu", torch.bfloat16)
    assert count == streamed_frames(45)
    index = torch.tensor([min(i, 44) for i in range(count)])
    assert torch.equal(lq, upscale_and_crop(video.index_select(0, index), 4, torch.bfloat16))


def test_stand_in_attention_is_dense_attention_over_the_selected_blocks(driver):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 16) for n in (256, 192, 192))
    everything = torch.ones(1, 2, 2, 3, dtype=torch.int8)
    dense = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(driver.block_mask_sdpa(q, k, v, everything), dense, atol=1e-6)

    mask = torch.zeros(1, 2, 2, 3, dtype=torch.int8)
    mask[0, 0, 0, 1] = 1  # head 0, queries 0..127 see keys 64..127 only
    out = driver.block_mask_sdpa(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q[:, :1, :128], k[:, :1, 64:128], v[:, :1, 64:128])
    assert torch.allclose(out[:, :1, :128], expected, atol=1e-6)
    # Query blocks that select nothing give 0, not NaN.
    assert torch.count_nonzero(out[:, 0, 128:]) == 0 and torch.count_nonzero(out[:, 1]) == 0


def test_output_is_lossless_ffv1_that_compare_videos_reads(driver, tmp_path):
    spec = importlib.util.spec_from_file_location("compare_videos_under_test", SCRIPT.with_name("compare_videos.py"))
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    frames = (torch.rand(3, 32, 48, 3) * 255).round().to(torch.uint8)
    path = tmp_path / "ref.mkv"
    driver.write_ffv1(path, frames, 24000 / 1001)
    decoded = compare.frames(str(path))
    assert len(decoded) == 3 and all((a == b.numpy()).all() for a, b in zip(decoded, frames))
    assert not list(tmp_path.glob("*.partial*"))


@pytest.fixture
def clip(tmp_path):
    return make_video(tmp_path / "in.mp4", frames=3, width=32, height=32)


def run_main(driver, capsys, *args: str) -> tuple[int, str]:
    code = driver.main([*map(str, args)])
    return code, capsys.readouterr().err.strip()


def test_missing_checkout_is_one_line_naming_the_folder(driver, capsys, clip, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in (driver.DIT_FILE, driver.LQ_PROJ_FILE, driver.TCDECODER_FILE, driver.PROMPT_FILE):
        (models / name).write_bytes(b"")
    code, err = run_main(driver, capsys, clip, "-o", tmp_path / "out.mkv", "--reference", tmp_path / "nowhere",
                         "--models", models, "--attention", "sdpa-block-mask", "--device", "cpu")
    assert code == 2 and len(err.splitlines()) == 1
    assert "nowhere" in err and "src/pipelines/flashvsr_tiny.py" in err


def test_missing_model_files_are_named(driver, capsys, clip, tmp_path):
    code, err = run_main(driver, capsys, clip, "-o", tmp_path / "out.mkv", "--reference", tmp_path,
                         "--models", tmp_path, "--mode", "full", "--attention", "sdpa-block-mask", "--device", "cpu")
    assert code == 2 and len(err.splitlines()) == 1
    assert driver.VAE_FILE in err and driver.DIT_FILE in err and driver.TCDECODER_FILE not in err


def test_sparse_sage_off_the_gpu_is_refused_in_one_line(driver, capsys, clip, tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # conftest sets it for the kernel tests
    code, err = run_main(driver, capsys, clip, "-o", tmp_path / "out.mkv", "--reference", tmp_path,
                         "--models", tmp_path, "--device", "cpu")
    assert code == 2 and len(err.splitlines()) == 1 and "sdpa-block-mask" in err


def test_existing_output_is_kept(driver, capsys, clip, tmp_path):
    out = tmp_path / "out.mkv"
    out.write_bytes(b"keep")
    code, err = run_main(driver, capsys, clip, "-o", out, "--reference", tmp_path, "--models", tmp_path,
                         "--attention", "sdpa-block-mask", "--device", "cpu")
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"keep"


def test_stand_in_matches_the_reference_kernel(driver):
    """The reference's int8 sparse_sage kernel (interpreted off the GPU; conftest sets TRITON_INTERPRET)
    against the stand-in: the same blocks attended, within int8 quantization error."""
    if not (CHECKOUT / "src").is_dir():
        pytest.skip(f"no reference checkout at {CHECKOUT}")
    pytest.importorskip("PIL")
    pytest.importorskip("torchvision")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and no Triton interpreter")
    driver.import_reference(CHECKOUT)
    kernel = driver.reference_module("models.sparse_sage.core").sparse_sageattn
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 64, generator=generator).to(device, torch.bfloat16) for n in (256, 384, 384))
    mask = (torch.rand(1, 2, 2, 6, generator=generator) > 0.4).to(device, torch.int8)
    mask[0, 1, 1] = 0  # a query block that attends to nothing
    out = kernel(q, k, v, mask_id=mask, is_causal=False, tensor_layout="HND").float()
    expected = driver.block_mask_sdpa(q.float(), k.float(), v.float(), mask)
    assert (out - expected).abs().mean() < 0.05 * expected.abs().mean()
    assert torch.count_nonzero(out[0, 1, 128:]) == 0
