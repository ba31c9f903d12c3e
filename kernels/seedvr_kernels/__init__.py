"""Triton kernels for seedvr-cli.

Installed as ``seedvr_kernels`` (not ``kernels``: a PyPI package of that name exists).
Each kernel module keeps a plain PyTorch reference beside it; tests compare the two.
"""
