"""Stand-ins for the models, shared by the tests of the per-window path."""

from __future__ import annotations


class StandInDiT:
    """The fixture's stand-in: velocity ``x_t - (0.8 cond + 0.1)``, so ``x_0 = 0.8 cond + 0.1``.

    ``noise_weight`` > 0 lets the noise through (``x_0`` then depends on ``x_T``).
    """

    def __init__(self, noise_weight: float = 0.0) -> None:
        self.calls: list[dict] = []
        self.noise_weight = noise_weight

    def __call__(self, vid, txt, vid_shape, txt_shape, timestep):
        self.calls.append({"vid": tuple(vid.shape), "txt": tuple(txt.shape), "vid_shape": vid_shape.tolist(),
                           "txt_shape": txt_shape.tolist(), "timestep": timestep.tolist(), "dtype": vid.dtype})
        return (1 - self.noise_weight) * vid[:, :16] - (0.8 * vid[:, 16:32] + 0.1)


class StandInStreamer:
    """FlashVSR's ``SegmentStreamer`` seam, obeyed without models: output frame ``j`` is
    ``0.8 lq[j] + 0.1 lq[j + 4] + 0.05 noise`` (the noise of its latent frame, channel 0, repeated
    over 8x8 pixels), yielded on the reference schedule (21 frames, then 8 at a time)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def stream(self, lq, noise, options):
        self.calls.append({"lq": tuple(lq.shape), "noise": tuple(noise.shape), "options": options,
                           "dtype": lq.dtype})
        outputs = lq.shape[2] - 4
        grain = noise[:, :1].repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        done = 0
        while done < outputs:
            count = 21 if done == 0 else 8
            frames = range(done, min(done + count, outputs))
            latent = [j // 4 for j in frames]
            yield (0.8 * lq[:, :, frames.start:frames.stop] + 0.1 * lq[:, :, frames.start + 4:frames.stop + 4]
                   + 0.05 * grain[:, :, latent].expand(-1, 3, -1, -1, -1))
            done = frames.stop
