"""Hyperparameters of the SeedVR2 causal 3-D video VAE (``video_vae_v3``, "s8_c16_t4").

The real checkpoint (``ema_vae*.safetensors`` / ``ema_vae.pth``) and a tiny debug variant share one
architecture; only widths differ. ``VAE_VARIANTS`` is the table, ``vae_config(name)`` the lookup.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the VAE. Block ``i`` of the encoder outputs ``block_out_channels[i]`` channels; the
    decoder walks the same list backwards."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    # Encoder blocks get this many ResNets; decoder blocks get one more (2 -> 3).
    layers_per_block: int = 2
    norm_num_groups: int = 32
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    # Encoder blocks whose downsampler also halves time, decoder blocks whose upsampler doubles it.
    # Every block but the last has a (spatial) down/upsampler.
    temporal_down_blocks: tuple[int, ...] = (1, 2)
    temporal_up_blocks: tuple[int, ...] = (0, 1)
    # Mid-block self-attention head width; the checkpoints use one head over all channels.
    attention_head_dim: int = 512
    norm_eps: float = 1e-6
    # Pipeline-side latent scale (not a module attribute in the reference): latent = mean * scale.
    scaling_factor: float = 0.9152

    def __post_init__(self) -> None:
        channels = self.block_out_channels
        if not channels:
            raise ValueError("VAEConfig.block_out_channels must name at least one block")
        for width in channels:
            if width % self.norm_num_groups:
                raise ValueError(
                    f"VAEConfig: block width {width} is not divisible by norm_num_groups {self.norm_num_groups}"
                )
        if channels[-1] % self.attention_head_dim:
            raise ValueError(
                f"VAEConfig: mid-block width {channels[-1]} is not divisible by "
                f"attention_head_dim {self.attention_head_dim}"
            )
        last = len(channels) - 1
        for name, blocks in (("temporal_down_blocks", self.temporal_down_blocks),
                             ("temporal_up_blocks", self.temporal_up_blocks)):
            if any(not 0 <= index < last for index in blocks):
                raise ValueError(f"VAEConfig.{name} {blocks}: only blocks 0..{last - 1} resample")
        if len(self.temporal_down_blocks) != len(self.temporal_up_blocks):
            raise ValueError("VAEConfig: the encoder and decoder must resample time equally often")
        if self.layers_per_block < 1 or self.latent_channels < 1:
            raise ValueError("VAEConfig: layers_per_block and latent_channels must be positive")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** len(self.temporal_down_blocks)

    def latent_frames(self, frames: int) -> int:
        """Latent frames for ``frames`` pixel frames (which must be 1 + a multiple of the factor)."""
        return (frames - 1) // self.temporal_factor + 1

    def pixel_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal_factor + 1


VAE_VARIANTS: dict[str, VAEConfig] = {
    # The published SeedVR2 VAE (shared by the 3B and 7B DiTs): 250 tensors, 250,648,227 parameters.
    "vae": VAEConfig(),
    # The parity fixtures' tiny VAE: same code path, narrow widths (246 tensors, 282,331 parameters).
    "tiny-vae": VAEConfig(
        block_out_channels=(8, 8, 16, 16),
        norm_num_groups=4,
        attention_head_dim=16,
    ),
}


def vae_config(name: str) -> VAEConfig:
    """The config of a named variant (``"vae"`` or ``"tiny-vae"``)."""
    try:
        return VAE_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown VAE variant {name!r}; known: {', '.join(VAE_VARIANTS)}") from None


def vae_config_from_reference_kwargs(kwargs: dict) -> VAEConfig:
    """A config from the reference wrapper's constructor kwargs (fixtures' ``constructor_kwargs``,
    the checkpoint yaml): the reference derives the attention width and the temporal blocks."""
    channels = tuple(int(c) for c in kwargs["block_out_channels"])
    temporal = int(kwargs.get("temporal_scale_num", 2))
    last = len(channels) - 1
    spatial = int(kwargs.get("spatial_downsample_factor", 2**last))
    if spatial != 2**last:
        raise ValueError(f"spatial_downsample_factor {spatial} does not match {len(channels)} blocks")
    layers = int(kwargs.get("layers_per_block", 2))
    return VAEConfig(
        block_out_channels=channels,
        layers_per_block=layers,
        norm_num_groups=int(kwargs.get("norm_num_groups", 32)),
        in_channels=int(kwargs.get("in_channels", 3)),
        out_channels=int(kwargs.get("out_channels", 3)),
        latent_channels=int(kwargs.get("latent_channels", 16)),
        # The reference marks encoder blocks i >= n-1-temporal_scale_num (the last one has no
        # downsampler) and decoder blocks i < temporal_scale_num.
        temporal_down_blocks=tuple(range(max(0, last - temporal), last)),
        temporal_up_blocks=tuple(range(min(temporal, last))),
        attention_head_dim=channels[-1],
    )
