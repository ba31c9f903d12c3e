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
