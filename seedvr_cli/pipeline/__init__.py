"""The per-window numerical path, tensors in and tensors out: sizes and temporal windows,
preprocessing, conditioning, one-step sampling, colour correction, blending and quantisation.

It imports only ``seedvr_cli.models`` (and the leaf ``errors``): files, devices, processes and
settings belong to the layers above (``run``, ``parallel``, ``config``).
"""
