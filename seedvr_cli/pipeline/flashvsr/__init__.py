"""FlashVSR's numerical glue around its models: preprocessing (bicubic upscale, 128-pixel crop,
8n+1 frame padding), the adain colour fix, LR tiles for the tiled DiT, temporal segments, and one
segment streamed through a ``stream.SegmentStreamer`` (the seam the FlashVSR models fill).

Like the rest of ``pipeline``: tensors in, tensors out; no files, devices or processes.
``choices`` holds the names and defaults without torch, for the settings and the CLI.
"""
