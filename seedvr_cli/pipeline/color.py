"""Colour correction of decoded frames against the preprocessed input (docs/reference-behaviour.md R17).

Every method takes ``content`` (decoded frames ``[B, 3, H, W]`` in about [-1, 1]) and ``style``
(the preprocessed low-resolution input at the same size, [-1, 1]) and returns ``[B, 3, H, W]``:

* ``wavelet``: high frequencies of the content + low frequencies of the style (per frame);
* ``adain``: per-frame, per-channel mean/std transfer (not clamped);
* ``lab``: wavelet, then Lab histogram matching of a/b (and 20 % of L) pooled over the batch;
* ``hsv``: per-hue-bin saturation histogram matching pooled over the batch;
* ``wavelet_adaptive``: wavelet, switching to ``hsv`` where wavelet over-saturates;
* ``none``: the content unchanged.

Histogram matching follows torch's default (non-stable) CPU ``argsort`` for tied values: the
reference's tie order, which decides the result wherever many pixels share a value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seedvr_cli.pipeline.choices import COLOR_METHODS, DEFAULT_COLOR_METHOD


WAVELET_LEVELS = 5
ADAIN_EPS = 1e-5
LAB_LUMINANCE_WEIGHT = 0.8
HSV_BINS = 12
HSV_MIN_PIXELS = 100

RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
XYZ_TO_RGB = (
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)
D65_WHITE = (0.95047, 1.0, 1.08883)
LAB_EPSILON = (6.0 / 29.0) ** 3
LAB_KAPPA = (29.0 / 3.0) ** 3


# ---------------------------------------------------------------- wavelet / adain


def wavelet_blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Depthwise [1,2,1]x[1,2,1]/16 blur dilated by ``radius`` with replicate padding."""
    channels = image.shape[1]
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16.0).expand(channels, 1, 3, 3)
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=radius)


def wavelet_split(image: torch.Tensor, levels: int = WAVELET_LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) frequencies; radii 1, 2, 4, ... capped at ``min(H, W) // 8``.

    The cap is numz's; it changes the result for frames under 128 px on the short side.
    """
    cap = max(1, min(image.shape[-2:]) // 8)
    high = torch.zeros_like(image)
    low = image
    for level in range(levels):
        blurred = wavelet_blur(low, min(2**level, cap))
        high += low - blurred
        low = blurred
    return high, low


def wavelet(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    high, _ = wavelet_split(content)
    _, low = wavelet_split(style)
    return (high + low).clamp(-1.0, 1.0)


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(2)
        std = (flat.var(dim=2) + ADAIN_EPS).sqrt()
        return flat.mean(dim=2)[..., None, None], std[..., None, None]

    style_mean, style_std = mean_std(style)
    content_mean, content_std = mean_std(content)
    return (content - content_mean) / content_std * style_std + style_mean


# ---------------------------------------------------------------- histogram matching


def match_histogram(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Rank-based matching of 1-D ``source`` values to ``reference`` values.

    The k-th smallest source value takes the k-th smallest reference value (equal counts), or the
    reference value at ``floor(q (n_ref - 1))``, ``q = linspace(0, 1, n_src)``.
    """
    order = torch.argsort(source)
    reference_sorted = torch.sort(reference).values
    if source.numel() == reference.numel():
        picked = reference_sorted
    else:
        positions = torch.linspace(0, 1, source.numel(), device=source.device)
        picked = reference_sorted[(positions * (reference.numel() - 1)).long()]
    matched = torch.empty_like(source)
    matched[order] = picked.to(source.dtype)
    return matched


# ---------------------------------------------------------------- lab


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def from_unit(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0 - 1.0


def _apply_matrix(matrix: tuple, x: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(matrix, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,bjhw->bihw", m, x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] ``[B, 3, H, W]`` -> CIE Lab (D65)."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _apply_matrix(RGB_TO_XYZ, linear)
    white = torch.tensor(D65_WHITE, dtype=rgb.dtype, device=rgb.device)[None, :, None, None]
    t = xyz / white
    f = torch.where(t > LAB_EPSILON, t.clamp(min=0) ** (1.0 / 3.0), (LAB_KAPPA * t + 16.0) / 116.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) -> sRGB clamped to [0, 1]."""
    lightness, a, b = lab.unbind(1)
    fy = (lightness + 16.0) / 116.0
    f = torch.stack([a / 500.0 + fy, fy, fy - b / 200.0], dim=1)
    t = torch.where(f > 6.0 / 29.0, f**3, (116.0 * f - 16.0) / LAB_KAPPA)
    white = torch.tensor(D65_WHITE, dtype=lab.dtype, device=lab.device)[None, :, None, None]
    linear = _apply_matrix(XYZ_TO_RGB, t * white)
    linear = linear.clamp(min=0.0)
    srgb = torch.where(linear > 0.0031308, 1.055 * linear ** (1.0 / 2.4) - 0.055, 12.92 * linear)
    return srgb.clamp(0.0, 1.0)


def _pooled(channel: torch.Tensor) -> torch.Tensor:
    return channel.reshape(-1)


def lab(content: torch.Tensor, style: torch.Tensor, luminance_weight: float = LAB_LUMINANCE_WEIGHT) -> torch.Tensor:
    """Wavelet, then Lab matching of a/b and a partial L match, statistics pooled over the batch."""
    corrected = wavelet(content, style)
    content_lab = rgb_to_lab(to_unit(corrected))
    style_lab = rgb_to_lab(to_unit(style))
    out = torch.empty_like(content_lab)
    for channel in (1, 2):
        matched = match_histogram(_pooled(content_lab[:, channel]), _pooled(style_lab[:, channel]))
        out[:, channel] = matched.reshape(content_lab[:, channel].shape)
    lightness = content_lab[:, 0]
    matched_l = match_histogram(_pooled(lightness), _pooled(style_lab[:, 0])).reshape(lightness.shape)
    out[:, 0] = luminance_weight * lightness + (1.0 - luminance_weight) * matched_l
    return from_unit(lab_to_rgb(out))


# ---------------------------------------------------------------- hsv


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, 3, H, W]`` in [0, 1] -> hue in [0, 1), saturation, value (each ``[B, H, W]``)."""
    r, g, b = rgb.unbind(1)
    value, _ = rgb.max(dim=1)
    minimum, _ = rgb.min(dim=1)
    delta = value - minimum
    safe_delta = torch.where(delta > 1e-10, delta, torch.ones_like(delta))
    hue = torch.where(
        value == r,
        torch.remainder((g - b) / safe_delta, 6.0),
        torch.where(value == g, (b - r) / safe_delta + 2.0, (r - g) / safe_delta + 4.0),
    )
    hue = torch.where(delta > 1e-10, hue / 6.0, torch.zeros_like(hue))
    saturation = torch.where(value > 0, delta / torch.where(value > 0, value, torch.ones_like(value)), torch.zeros_like(value))
    return hue, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    sector_float = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector_float
    sector = torch.remainder(sector_float, 6).long()
    p = value * (1.0 - saturation)
    q = value * (1.0 - fraction * saturation)
    t = value * (1.0 - (1.0 - fraction) * saturation)
    choices = torch.stack(
        [
            torch.stack([value, t, p]),
            torch.stack([q, value, p]),
            torch.stack([p, value, t]),
            torch.stack([p, q, value]),
            torch.stack([t, p, value]),
            torch.stack([value, p, q]),
        ]
    )  # [6, 3, B, H, W]
    index = sector[None, None].expand(1, 3, *sector.shape)
    rgb = torch.gather(choices, 0, index)[0]
    return rgb.permute(1, 0, 2, 3)


def hue_bin_mask(hue: torch.Tensor, index: int) -> torch.Tensor:
    """Pixels of hue bin ``index``; bin 0 also spans [11/12, 1), overlapping bin 11, as in numz."""
    width = 1.0 / HSV_BINS
    mask = (hue >= index * width) & (hue < (index + 1) * width)
    if index == 0:
        mask |= hue >= 1.0 - width
    return mask


def hsv_saturation_match(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Content saturations matched to the style bin by hue bin, pooled over the batch."""
    content_hue, content_sat, _ = rgb_to_hsv(content)
    style_hue, style_sat, _ = rgb_to_hsv(style)
    out = content_sat.clone()
    for index in range(HSV_BINS):
        content_mask = hue_bin_mask(content_hue, index)
        style_mask = hue_bin_mask(style_hue, index)
        if int(content_mask.sum()) > HSV_MIN_PIXELS and int(style_mask.sum()) > HSV_MIN_PIXELS:
            # Every bin reads the original saturations; bin 11 overwrites bin 0 on [11/12, 1).
            out[content_mask] = match_histogram(content_sat[content_mask], style_sat[style_mask])
    return out


def hsv(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    content_unit, style_unit = to_unit(content), to_unit(style)
    hue, _, value = rgb_to_hsv(content_unit)
    saturation = hsv_saturation_match(content_unit, style_unit)
    return from_unit(hsv_to_rgb(hue, saturation, value).clamp(0.0, 1.0))


def wavelet_adaptive(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Wavelet, blended towards ``hsv`` where wavelet leaves the colours too saturated."""
    by_wavelet = wavelet(content, style)
    by_hsv = hsv(content, style)
    content_sat = rgb_to_hsv(to_unit(content))[1]
    style_sat = rgb_to_hsv(to_unit(style))[1]
    wavelet_sat = rgb_to_hsv(to_unit(by_wavelet))[1]
    gate = (wavelet_sat - style_sat > 0.075).to(content.dtype)
    weight = (torch.sigmoid(5.0 * (content_sat - style_sat - 0.15)) * gate).clamp(0.0, 1.0)[:, None]
    return (1 - weight) * by_wavelet + weight * by_hsv


# ---------------------------------------------------------------- dispatch

# Methods whose result for a frame depends on that frame (and its style frame) only, so that they
# can run a few frames at a time: wavelet blurs and AdaIN statistics are per frame, whereas the
# histogram methods (lab, hsv and wavelet_adaptive through hsv) match the whole clip's histograms.
PER_FRAME_COLOR_METHODS = frozenset({"wavelet", "adain", "none"})


def color_correct(content: torch.Tensor, style: torch.Tensor, method: str = DEFAULT_COLOR_METHOD) -> torch.Tensor:
    """Apply ``method`` in float32 (style resized bilinearly if its size differs)."""
    if method not in COLOR_METHODS:
        raise ValueError(f"unknown colour correction {method!r}; expected one of {COLOR_METHODS}")
    if method == "none":
        return content
    dtype = content.dtype
    content32 = content.to(torch.float32)
    style32 = style.to(device=content.device, dtype=torch.float32)
    if style32.shape[-2:] != content32.shape[-2:]:
        style32 = F.interpolate(style32, size=content32.shape[-2:], mode="bilinear", align_corners=False)
    method_fn = {"wavelet": wavelet, "wavelet_adaptive": wavelet_adaptive, "lab": lab, "hsv": hsv, "adain": adain}[method]
    return method_fn(content32, style32).to(dtype)

