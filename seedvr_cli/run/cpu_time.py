"""How long an input would take on the CPU, for the warning when ``--devices auto`` finds no GPU.

A rough floor from arithmetic, not a measurement: the DiT costs about 2 x parameters FLOPs per
token (a token is a 16x16 patch of a latent frame, one latent frame per 4 video frames), and the
VAE's 3D convolutions about ``_VAE_FLOPS_PER_PIXEL`` to encode and decode each pixel (an image VAE
decoder of this shape costs ~2.3 MFLOP per pixel; the causal 3x3x3 kernels triple it, the encoder
adds about half). That is divided by what a fast many-core CPU sustains in these kernels, so real
CPUs take longer, never much less: the warning may understate the wait, it does not cry wolf.
"""

from __future__ import annotations

from seedvr_cli.run.plan import InputPlan

# Parameters of the DiT variants that matter for this warning; a variant not named here (the
# tiny test models) costs next to nothing.
_DIT_PARAMS = {"3b": 3.4e9, "7b": 7.9e9, "flashvsr": 1.7e9}  # FlashVSR: DiT + LQ projector
_VAE_FLOPS_PER_PIXEL = 10e6
_FRAMES_PER_LATENT_FRAME = 4
_PIXELS_PER_TOKEN = 16 * 16
# A well-fed 32-core AVX-512 server in large GEMMs; most machines without a GPU are slower.
_CPU_FLOPS_PER_SECOND = 1e12
# Below this a CPU run is merely slow, not worth a warning.
WARN_AFTER_S = 3600.0


def cpu_seconds(plan: InputPlan, dit_variant: str | None) -> float:
    """A floor on the seconds ``plan`` takes on one CPU worker (``dit_variant`` None: assume 3B)."""
    height, width = plan.model_size
    pixels = height * width
    params = _DIT_PARAMS.get(dit_variant or "3b", 0.0)
    dit = 2 * params * pixels / _PIXELS_PER_TOKEN / _FRAMES_PER_LATENT_FRAME
    vae = _VAE_FLOPS_PER_PIXEL * pixels
    return plan.frames * (dit + vae) / _CPU_FLOPS_PER_SECOND


def cpu_fallback_warning(input_name: str, plan: InputPlan, dit_variant: str | None) -> str | None:
    """The warning for an input ``--devices auto`` put on the CPU, when it will take hours; else None."""
    seconds = cpu_seconds(plan, dit_variant)
    if seconds < WARN_AFTER_S:
        return None
    height, width = plan.output_size
    model = "FlashVSR" if dit_variant == "flashvsr" else (dit_variant or "3b").upper()
    return (f"no GPU is visible, so --devices auto runs on the CPU: {input_name} ({plan.frames} frames at "
            f"{width}x{height}, {model} model) will take at least ~{seconds / 3600:.1f} h there; press Ctrl-C and "
            "run on a machine with a GPU, or pass --devices cpu to run on the CPU without this warning")
