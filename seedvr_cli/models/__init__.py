"""Pure ``nn.Module`` re-implementations of the SeedVR2 networks, configured by dataclasses.

No file I/O and no device juggling here: loading lives in ``seedvr_cli.weights``, memory tricks in
``seedvr_cli.memory``, and both wrap these modules from outside.
"""
