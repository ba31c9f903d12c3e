"""Memory tricks that wrap models from outside: spatial tiling (later: BlockSwap, offload)."""
