"""Triton kernels for seedvr-cli.

Installed as ``seedvr_kernels`` (not ``kernels``: a PyPI package of that name exists).
Each kernel module keeps a plain PyTorch reference beside it; tests compare the two.
``dispatch`` decides, per device, whether the models use a kernel or their PyTorch path;
Triton itself is imported only when a kernel is chosen.
"""

from .dispatch import KERNELS_ENV, fast_group_norm, kernels_setting

__all__ = ["KERNELS_ENV", "fast_group_norm", "kernels_setting"]
