"""Phase offload: one model waits in host memory while the other runs.

    vae = OffloadedVAE(vae_or_tiled_vae, weights=HostResidentWeights(vae_module, device))
    dit = OffloadedDiT(dit_or_tiled_dit, weights=HostResidentWeights(dit_module, device))

The VAE's tensors are copied once into (pinned, on a GPU) host buffers; ``encode`` and ``decode``
put them on the device with one non-blocking copy each, run the wrapped codec, and drop the device
copies again, so the allocator can give that memory to the DiT's activations. The weights are
never written back: they do not change. The 3B/7B VAE is about 0.47 GiB in bf16, so this pays
only where the DiT phase sets the peak (large outputs, or BlockSwap with DiT tiles); a window
pays one host-to-device copy of the VAE per direction (~10 ms on PCIe 5).

The DiT is the other way round: at 1080p the VAE decode sets the peak (its causal cache and one
temporal slice, ~21 GiB), and the DiT's weights (6.3 GiB for the 3B, 15.3 for the 7B in bf16) sit
idle beside it. Offloaded, they come back once per window (~0.15 / 0.35 s at PCIe 5 speed against
~10 s of window), at the price of a pinned host copy. Under BlockSwap only the DiT's resident
part moves this way; the swapped blocks are the swapper's and already live in host memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class HostResidentWeights:
    """A module's parameters and buffers kept in host memory, on ``device`` only inside ``on_device``.

    Tensors that are already in host memory when this is made (BlockSwap's swapped blocks) are
    left to whoever put them there."""

    def __init__(self, module: nn.Module, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.tensors: list[tuple[Tensor, Tensor]] = []  # (the module's tensor, its host copy)
        pin = self.device.type == "cuda"
        for tensor in _unique(module):
            if pin and tensor.device.type != "cuda":
                continue
            # Straight into a pinned buffer: a pageable copy first would hold the weights twice.
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=pin)
            host.copy_(tensor.detach())
            tensor.data = host
            self.tensors.append((tensor, host))

    @contextmanager
    def on_device(self) -> Iterator[None]:
        for tensor, host in self.tensors:
            tensor.data = host.to(self.device, non_blocking=True)
        try:
            yield
        finally:
            # The device copies are released to the caching allocator once the kernels queued on
            # them are done (the allocator tracks the stream), no synchronisation needed here.
            for tensor, host in self.tensors:
                tensor.data = host

    def drop_taken(self) -> None:
        """Forget the tensors someone else has since pointed elsewhere (BlockSwap added later takes
        its blocks into its own host buffers): those are no longer this object's to move."""
        self.tensors = [(tensor, host) for tensor, host in self.tensors if tensor.data_ptr() == host.data_ptr()]

    @property
    def nbytes(self) -> int:
        return sum(host.numel() * host.element_size() for _, host in self.tensors)


def _unique(module: nn.Module) -> list[Tensor]:
    """Parameters and buffers, each once (tied weights would otherwise be copied twice)."""
    seen: set[int] = set()
    found = []
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            found.append(tensor)
    return found


@dataclass
class OffloadedVAE:
    """Any ``LatentCodec`` (a ``VideoVAE`` or a ``TiledVAE``) whose weights live on the host between calls."""

    codec: object
    weights: HostResidentWeights

    @property
    def config(self):
        return self.codec.config

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with self.weights.on_device():
            return self.codec.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        with self.weights.on_device():
            return self.codec.decode(z)


@dataclass
class OffloadedDiT:
    """Any ``VelocityModel`` (a ``NaDiT``, with or without BlockSwap, or a ``TiledDiT``) whose
    GPU-resident weights live on the host between calls: one upload per window, whatever the tiles."""

    model: object
    weights: HostResidentWeights

    @property
    def config(self):
        return self.model.config

    def __call__(self, *args, **kwargs) -> Tensor:
        with self.weights.on_device():
            return self.model(*args, **kwargs)
