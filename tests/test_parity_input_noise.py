"""numz's phase-1 input-noise draws, reproduced by the parity tool for every memory layout.

``randn_like`` draws in memory order, and numz's transformed clip ``[3, T', Hp, Wp]`` reaches it in
one of three layouts depending on whether the batch was padded to 4n+1 frames and whether the
spatial transform then resized or padded. Each test builds a batch with the same tensor operations
numz applies (slice/cat of ``[T, H, W, C]`` frames, permute to TCHW, the permute/cat/permute-back
of the temporal padding, interpolate, clamp, pad, normalize, permute to CTHW), draws with
``randn_like`` after numz's seeding, and checks the parity tool's draw is the same, bit for bit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seedvr_cli.parity.pipeline import numz_clip_strides, numz_input_noise
from seedvr_cli.pipeline.plan import FrameSize, plan_frame_size
from seedvr_cli.pipeline.temporal import append_padding, padded_length

SEED = 42
# numz seeds phase 1 apart from the sampling noise.
PHASE1_SEED = SEED + 1_000_000


def _frames(count: int, height: int, width: int) -> torch.Tensor:
    """Decoded video frames as numz holds them: one contiguous [T, H, W, C] tensor in [0, 1]."""
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(count * 1000 + height + width))


def _numz_transformed_batch(frames_thwc: torch.Tensor, size: FrameSize, uniform_to: int = 0) -> torch.Tensor:
    """One batch through numz's tensor operations, so the result has numz's memory layout."""
    video = frames_thwc
    if uniform_to > len(video):
        # Uniform-batch padding concatenates whole [H, W, C] frames: still frame-major memory.
        extra = append_padding(len(video), uniform_to - len(video))
        video = torch.cat([video, video[extra]], dim=0)
    video = video.permute(0, 3, 1, 2)
    count = video.shape[0]
    if count % 4 != 1:
        # The 4n+1 padding works on CTHW and permutes back; the cat allocates fresh CTHW memory.
        cthw = video.permute(1, 0, 2, 3)
        cthw = torch.cat([cthw, cthw[:, append_padding(count, padded_length(count) - count)]], dim=1)
        video = cthw.permute(1, 0, 2, 3)
    # torchvision's resize returns its input untouched when the size is already right.
    if size.short_side != size.input:
        video = F.interpolate(video, size=size.short_side, mode="bicubic", align_corners=False, antialias=True)
    if size.resized != size.short_side:
        video = F.interpolate(video, size=size.resized, mode="bicubic", align_corners=False, antialias=True)
    video = torch.clamp(video, 0.0, 1.0)
    # The divisible-by-16 pad is skipped when nothing is missing.
    pad_h, pad_w = size.padded[0] - size.resized[0], size.padded[1] - size.resized[1]
    if pad_h or pad_w:
        video = F.pad(video, (0, pad_w, 0, pad_h), mode="constant", value=0.0)
    video = video.clone().sub_(0.5).div_(0.5)  # torchvision Normalize, not in place
    return video.permute(1, 0, 2, 3)


def _reference_draws(clips: list[torch.Tensor]) -> list[torch.Tensor]:
    torch.manual_seed(PHASE1_SEED)
    return [torch.randn_like(clip) for clip in clips]


def _ours(clips: list[torch.Tensor], batch_frames: list[int], size: FrameSize) -> list[torch.Tensor]:
    # Only the shapes may matter: our own clips are contiguous, whatever numz's layout was.
    shaped = [torch.empty(clip.shape) for clip in clips]
    return numz_input_noise(SEED, shaped, True, batch_frames=batch_frames, frame_size=size)


def _channels_last_draw(shape: torch.Size) -> torch.Tensor:
    """What the parity tool drew for every batch before the layouts were told apart."""
    torch.manual_seed(PHASE1_SEED)
    _, _, height, width = shape
    return torch.empty_strided(tuple(shape), (1, 3 * height * width, 3 * width, 3)).normal_()


def test_unpadded_batch_draws_channels_last():
    # 5 frames (4n+1): no temporal padding; 20x30 is resized to 32x48 (a multiple of 16, no pad).
    size = plan_frame_size(20, 30, resolution=32)
    clip = _numz_transformed_batch(_frames(5, 20, 30), size)
    height, width = size.padded
    assert clip.stride() == (1, 3 * height * width, 3 * width, 3)

    (expected,) = _reference_draws([clip])
    (ours,) = _ours([clip], [5], size)
    assert ours.shape == clip.shape == (3, 5, 32, 48)
    assert ours.stride() == clip.stride()
    assert torch.equal(ours, expected)


@pytest.mark.parametrize(
    ("height", "width", "resolution", "max_resolution"),
    [
        (20, 30, 32, 0),  # resized, already a multiple of 16
        (40, 56, 40, 0),  # resize is a no-op, the pad alone changes the size (to 48x64)
        (64, 64, 60, 0),  # resized to 60x60 and padded back to 64x64: equal size, but both ran
        (20, 30, 40, 56),  # two resizes (max-resolution cap), then a pad
    ],
)
def test_padded_then_resized_batch_draws_contiguous_tchw(height, width, resolution, max_resolution):
    size = plan_frame_size(height, width, resolution=resolution, max_resolution=max_resolution)
    clip = _numz_transformed_batch(_frames(3, height, width), size)
    frames = padded_length(3)
    hp, wp = size.padded
    assert clip.shape == (3, frames, hp, wp)
    assert clip.stride() == (hp * wp, 3 * hp * wp, wp, 1)

    (expected,) = _reference_draws([clip])
    (ours,) = _ours([clip], [3], size)
    assert ours.stride() == clip.stride()
    assert torch.equal(ours, expected)
    assert not torch.equal(_channels_last_draw(clip.shape), expected)


def test_padded_batch_without_resize_or_pad_draws_contiguous_cthw():
    # 32x48 at resolution 32: the resize keeps the size and nothing is missing to a multiple of 16.
    size = plan_frame_size(32, 48, resolution=32)
    assert size.input == size.resized == size.padded
    clip = _numz_transformed_batch(_frames(3, 32, 48), size)
    assert clip.is_contiguous()

    (expected,) = _reference_draws([clip])
    (ours,) = _ours([clip], [3], size)
    assert ours.is_contiguous()
    assert torch.equal(ours, expected)
    assert not torch.equal(_channels_last_draw(clip.shape), expected)


def test_batches_continue_one_generator_across_layouts():
    # 7 frames in batches of 5: a channels-last 5-frame batch, then a 2-frame batch padded to 5.
    size = plan_frame_size(20, 30, resolution=32)
    video = _frames(7, 20, 30)
    clips = [_numz_transformed_batch(video[0:5], size), _numz_transformed_batch(video[5:7], size)]
    assert clips[0].stride() != clips[1].stride()

    expected = _reference_draws(clips)
    ours = _ours(clips, [5, 2], size)
    assert all(torch.equal(a, b) for a, b in zip(ours, expected))


def test_uniform_padded_batch_stays_channels_last():
    # A 2-frame last batch padded to a 5-frame uniform batch needs no 4n+1 padding afterwards.
    size = plan_frame_size(20, 30, resolution=32)
    clip = _numz_transformed_batch(_frames(2, 20, 30), size, uniform_to=5)
    height, width = size.padded
    assert clip.stride() == (1, 3 * height * width, 3 * width, 3)

    (expected,) = _reference_draws([clip])
    (ours,) = _ours([clip], [5], size)
    assert torch.equal(ours, expected)


def test_disabled_input_noise_draws_nothing():
    size = plan_frame_size(20, 30, resolution=32)
    state = torch.get_rng_state()
    assert numz_input_noise(SEED, [torch.empty(3, 5, 32, 48)], False, batch_frames=[3], frame_size=size) == [None]
    assert torch.equal(torch.get_rng_state(), state)


def test_padded_batch_without_frame_size_is_refused():
    with pytest.raises(ValueError, match="frame size"):
        numz_clip_strides((3, 5, 32, 48), 3, None)
