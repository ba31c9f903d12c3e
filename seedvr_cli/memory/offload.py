"""VAE offload: the VAE waits in host memory while the DiT runs and is on the GPU only while it codes.

    vae = OffloadedVAE(vae_or_tiled_vae, weights=HostResidentWeights(vae_module, device))

The VAE's tensors are copied once into (pinned, on a GPU) host buffers; ``encode`` and ``decode``
put them on the device with one non-blocking copy each, run the wrapped codec, and drop the device
copies again, so the allocator can give that memory to the DiT's activations. The weights are
never written back: they do not change. The 3B/7B VAE is about 0.47 GiB in bf16, so this pays
only where the DiT phase sets the peak (large outputs, or BlockSwap with DiT tiles); a window
pays one host-to-device copy of the VAE per direction (~10 ms on PCIe 5).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class HostResidentWeights:
    """A module's parameters and buffers kept in host memory, on ``device`` only inside ``on_device``."""

    def __init__(self, module: nn.Module, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.tensors: list[tuple[Tensor, Tensor]] = []  # (the module's tensor, its host copy)
        for tensor in (*module.parameters(), *module.buffers()):
            host = tensor.detach().to("cpu", copy=True)
            if self.device.type == "cuda":
                host = host.pin_memory()
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

    @property
    def nbytes(self) -> int:
        return sum(host.numel() * host.element_size() for _, host in self.tensors)


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
