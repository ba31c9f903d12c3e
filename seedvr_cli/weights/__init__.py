"""Checkpoint files: registry, download, readers (safetensors / .pth / GGUF), formats and loading."""
