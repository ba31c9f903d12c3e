"""Checkpoint files: registry, download (huggingface_hub), readers (safetensors / .pth / GGUF),
detection, compressed layers and loading.

Entry points (import from the submodules; this package imports nothing heavy):
- ``loader.load_dit(path, *, device, compute_dtype, keep_fp8=True, keep_gguf=True) -> NaDiT``
- ``loader.load_vae(path, *, device, dtype) -> VideoVAE``
- ``detect.inspect_checkpoint(path) -> CheckpointInfo``
- ``download.resolve_model_file(name_or_path, *, model_dir=None, download=True) -> Path``
- ``text_embedding.find_text_embedding(model_path, *, override, model_dir, download) -> Path`` and
  ``text_embedding.load_text_embedding(path, *, expected_dim=5120, device, dtype) -> Tensor``
- ``synthesize.write_checkpoint(variant, fmt, out, *, seed, device) -> Path`` (random test files)
"""
