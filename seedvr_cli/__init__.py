"""seedvr-cli: SeedVR2 video and image upscaling from the command line."""

__version__ = "0.1.0"
