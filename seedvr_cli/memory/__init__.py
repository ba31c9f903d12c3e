"""Memory savers that wrap models from outside, keeping their call signatures: spatial tiling of the
VAE (``tiling.TiledVAE``); BlockSwap and offload will follow the same rule."""
