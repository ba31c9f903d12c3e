"""The named choices of the pipeline as plain strings and numbers, importable without torch, so
that the settings and the CLI can offer and check them without loading the maths."""

# Colour correction methods (``pipeline.color``).
COLOR_METHODS = ("wavelet", "wavelet_adaptive", "lab", "hsv", "adain", "none")
DEFAULT_COLOR_METHOD = "wavelet"

# Compute precisions by flag name (``pipeline.precision``); "auto" picks one per device.
DTYPE_CHOICES = ("bf16", "fp16", "fp32")

# DiT attention backends by flag name (``models.attention_choice``); "auto" picks one per device.
ATTENTION_CHOICES = ("auto", "sdpa", "flash", "flex")

# Output short side when neither --resolution nor --scale is given (``pipeline.plan``).
DEFAULT_RESOLUTION = 1080
