"""Memory savers that wrap models from outside, keeping their call signatures: spatial tiling of the
VAE (``tiling.TiledVAE``) and BlockSwap of the DiT (``blockswap.apply_blockswap``: blocks, and the
layers around them, streamed from pinned host memory through two device slots)."""
