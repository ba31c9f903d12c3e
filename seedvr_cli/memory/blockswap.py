"""BlockSwap: DiT blocks (and optionally the layers around them) kept in host memory and streamed
through a ring of GPU slots while the model runs, with output identical to no swapping.

    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=32, swap_io=True), device="cuda")
    out = model(vid, txt, vid_shape, txt_shape, timestep)   # called exactly as before

How it works:

* The tensors of every swapped *group* (one block, or with ``swap_io`` the input layers ``vid_in``,
  ``txt_in``, ``emb_in`` and the output layers ``vid_out_norm``, ``vid_out_ada``, ``vid_out``)
  are packed once into one contiguous host buffer per group, pinned (page-locked) when the device
  is a GPU. Each tensor keeps its stored dtype and bytes: fp8 weights travel as fp8 and GGUF
  weights as packed uint8, never expanded on the host. At rest the modules' parameters are views
  of that host buffer.
* The GPU holds at most two groups at a time, in two preallocated byte *slots*, each the size of
  the largest group. A group is attached by one ``copy_`` of its host buffer into a slot, issued
  on a side stream, and its modules' parameters are pointed at views of the slot while it runs.
* The swapped groups are used in a fixed cyclic order (io_in, swapped blocks, io_out). While group
  k computes, group k+1 is copied into the other slot; the last group of a call prefetches the
  first of the next call. The compute stream waits for a slot's "ready" event before using it,
  and the side stream waits for the slot's "free" event (recorded after the previous user's
  kernels) before overwriting it: no device-wide synchronisation anywhere.
* Blocks are never moved: the runner owns the block loop through ``NaDiT``'s ``block_runner`` seam
  (it is installed as ``model.block_runner``), and with ``swap_io`` a forward pre-hook and hook
  attach the input layers before the model's own embedding and release the output layers after
  its head. The model's code is untouched.

Which blocks: the first N. The first blocks are the largest in both variants (blocks below
``mm_layers`` carry separate video and text weights; all 36 of the 7B, 10 of the 32 of the 3B), so
the first N free the most memory, and the community node's users count N the same way. Position
in the loop costs nothing: the cyclic prefetch loads block 0 during the previous call's tail.

Memory: the two slots cost twice the largest swapped group, so swapping N blocks frees about
N - 2 blocks' worth (``weight_vram`` gives the exact figure; swapping 1 or 2 blocks frees
nothing). A device of type "cpu" runs the same logic with plain copies, which is how the tests
check it without a GPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.dit import BlockContext, run_blocks

__all__ = ["IO_IN", "IO_OUT", "BlockSwap", "BlockSwapper", "WeightVRAM", "apply_blockswap", "tensor_bytes",
           "weight_vram"]

IO_IN = "io_in"
IO_OUT = "io_out"
GroupKey = int | str  # a block index, IO_IN or IO_OUT

# The CUDA caching allocator rounds every allocation up to 512 bytes; packing tensors on the same
# boundary keeps each view exactly as aligned as a tensor of its own (so the same kernels are
# chosen) and makes the VRAM arithmetic below match torch.cuda.memory_allocated.
_ALIGN = 512
_IO_IN_MODULES = ("vid_in", "txt_in", "emb_in")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# Pinned host memory comes from torch's host allocator, which rounds every request up to a power
# of two: many groups share one arena of a power-of-two size instead of wasting up to half each.
_ARENA_BYTES = 1 << 30


@dataclass(frozen=True)
class BlockSwap:
    """What to keep in host memory: the first ``blocks_to_swap`` DiT blocks, and with ``swap_io``
    the layers before and after them."""

    blocks_to_swap: int = 0
    swap_io: bool = False
    offload_device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.blocks_to_swap, bool) or not isinstance(self.blocks_to_swap, int):
            raise ValueError(f"blocks_to_swap must be an integer, got {self.blocks_to_swap!r}")
        if self.blocks_to_swap < 0:
            raise ValueError(f"blocks_to_swap must be 0 or more, got {self.blocks_to_swap}")
        if self.offload_device != "cpu":
            raise ValueError(f"offload_device must be 'cpu' (host memory), got {self.offload_device!r}")

    def swapped_blocks(self, num_blocks: int) -> range:
        if self.blocks_to_swap > num_blocks:
            raise ValueError(f"blocks_to_swap {self.blocks_to_swap} is more than the model's {num_blocks} blocks")
        return range(self.blocks_to_swap)

    def sequence(self, num_blocks: int) -> list[GroupKey]:
        """The swapped groups in the order one forward uses them."""
        blocks: list[GroupKey] = list(self.swapped_blocks(num_blocks))
        return [IO_IN, *blocks, IO_OUT] if self.swap_io else blocks

    def group_of(self, name: str, num_blocks: int) -> GroupKey | None:
        """The swapped group a state-dict name belongs to; None when it stays on the device."""
        match = _BLOCK.match(name)
        if match:
            index = int(match.group(1))
            return index if index in self.swapped_blocks(num_blocks) else None
        if not self.swap_io:
            return None
        return IO_IN if name.split(".", 1)[0] in _IO_IN_MODULES else IO_OUT


# ---------------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class WeightVRAM:
    """Bytes the DiT's weights take with a BlockSwap: ``resident`` tensors stay on the device,
    ``slots`` is the GPU ring that swapped groups pass through, ``offloaded`` stays in host memory."""

    resident: int
    slots: int
    offloaded: int

    @property
    def total(self) -> int:
        """Device bytes the weights need, each tensor rounded as the CUDA allocator rounds it. The
        allocator may also leave a large tensor's block unsplit (up to 1 MiB more each): the fp16
        3B measured 35-55 MB (under 1%) above this, so an auto-fit should keep that margin."""
        return self.resident + self.slots


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


def tensor_bytes(model: nn.Module) -> dict[str, int]:
    """Stored bytes of every parameter and buffer of ``model`` by state-dict name; works on a model
    built on the meta device, and sees fp8 / GGUF layers at their compressed size."""
    return {name: t.numel() * t.element_size() for name, t in _named_tensors(model)}


def weight_vram(sizes: Mapping[str, int], swap: BlockSwap, num_blocks: int) -> WeightVRAM:
    """Device and host bytes of a DiT's weights (``sizes``: state-dict name -> stored bytes, e.g.
    ``tensor_bytes(model)``) under ``swap``, laid out exactly as ``apply_blockswap`` lays them out."""
    resident = offloaded = 0
    groups: dict[GroupKey, int] = {}
    for name, nbytes in sizes.items():
        key = swap.group_of(name, num_blocks)
        if key is None:
            resident += _aligned(nbytes)
        else:
            groups[key] = groups.get(key, 0) + _aligned(nbytes)
            offloaded += _aligned(nbytes)
    slots = _num_slots(len(groups)) * max(groups.values(), default=0)
    return WeightVRAM(resident=resident, slots=slots, offloaded=offloaded)


def _num_slots(num_groups: int) -> int:
    return min(2, num_groups)


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    for name, _, _, tensor in _tensor_slots(model):
        yield name, tensor


def _tensor_slots(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, Tensor]]:
    """(state-dict name, owning module, attribute, tensor) for every parameter and buffer."""
    for prefix, module in model.named_modules():
        for store in (module._parameters, module._buffers):
            for attr, tensor in store.items():
                if tensor is not None:
                    yield (f"{prefix}.{attr}" if prefix else attr), module, attr, tensor


# ---------------------------------------------------------------------------------------------
# One swapped group


class _Group:
    """The tensors of one swapped group: where each lives in the group's flat bytes, the host copy
    (made once), and views of every slot laid out the same way."""

    def __init__(self, key: GroupKey, members: list[tuple[nn.Module, str, Tensor]]) -> None:
        self.key = key
        self.members = [(module, attr, attr in module._parameters) for module, attr, _ in members]
        self.layout: list[tuple[int, torch.dtype, torch.Size, int]] = []  # offset, dtype, shape, nbytes
        offset = 0
        for _, _, tensor in members:
            nbytes = tensor.numel() * tensor.element_size()
            self.layout.append((offset, tensor.dtype, tensor.shape, nbytes))
            offset += _aligned(nbytes)
        self.nbytes = offset
        self.host: Tensor | None = None
        self.host_views: list[Tensor] = []
        self.slot_views: list[list[Tensor]] = []

    def views(self, flat: Tensor) -> list[Tensor]:
        return [flat[offset : offset + nbytes].view(dtype).view(shape) for offset, dtype, shape, nbytes in self.layout]

    def fill_host(self, host: Tensor, tensors: list[Tensor]) -> None:
        self.host = host
        self.host_views = self.views(host)
        for view, tensor in zip(self.host_views, tensors):
            view.copy_(tensor)
        self.point(self.host_views)

    def point(self, tensors: list[Tensor]) -> None:
        """Make the modules' parameters and buffers these tensors (storage only; same objects)."""
        for (module, attr, is_param), tensor in zip(self.members, tensors):
            if is_param:
                module._parameters[attr].data = tensor
            else:
                module._buffers[attr] = tensor


# ---------------------------------------------------------------------------------------------
# How bytes reach a slot


class _PlainCopies:
    """Synchronous copies on a CPU "device": the swap logic without streams (tests)."""

    pinned = False

    def __init__(self, device: torch.device, num_slots: int) -> None:
        self.device = device

    def host_buffers(self, sizes: list[int]) -> list[Tensor]:
        return [torch.empty(n, dtype=torch.uint8) for n in sizes]

    def slot(self, nbytes: int) -> Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, device=self.device)

    def copy(self, slot: int, dst: Tensor, src: Tensor) -> None:
        dst.copy_(src)

    def wait_ready(self, slot: int) -> None:
        pass

    def mark_free(self, slot: int) -> None:
        pass


class _StreamCopies:
    """Copies on a side stream, ordered against the compute stream by one pair of events per slot."""

    pinned = True

    def __init__(self, device: torch.device, num_slots: int) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.ready = [torch.cuda.Event() for _ in range(num_slots)]
        self.free = [torch.cuda.Event() for _ in range(num_slots)]

    def host_buffers(self, sizes: list[int]) -> list[Tensor]:
        return _pinned_buffers(sizes)

    def slot(self, nbytes: int) -> Tensor:
        slot = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        # Freed by remove() possibly while a prefetch still writes it: the allocator must wait.
        slot.record_stream(self.stream)
        return slot

    def copy(self, slot: int, dst: Tensor, src: Tensor) -> None:
        # An event never recorded is not waited for (the slot's first use).
        self.stream.wait_event(self.free[slot])
        with torch.cuda.stream(self.stream):
            dst.copy_(src, non_blocking=True)
        self.ready[slot].record(self.stream)

    def wait_ready(self, slot: int) -> None:
        torch.cuda.current_stream(self.device).wait_event(self.ready[slot])

    def mark_free(self, slot: int) -> None:
        self.free[slot].record(torch.cuda.current_stream(self.device))


def _pinned_buffers(sizes: list[int]) -> list[Tensor]:
    """One pinned byte buffer per size, carved out of power-of-two arenas (first fit, in order)."""
    buffers: list[Tensor] = []
    arena, used = None, 0
    for i, size in enumerate(sizes):
        if arena is None or used + size > arena.numel():
            remaining = sum(_aligned(n) for n in sizes[i:])
            arena_size = max(_next_power_of_two(size), min(_ARENA_BYTES, _next_power_of_two(remaining)))
            arena, used = torch.empty(arena_size, dtype=torch.uint8, pin_memory=True), 0
        buffers.append(arena[used : used + size])
        used += _aligned(size)
    return buffers


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


# ---------------------------------------------------------------------------------------------
# The runner


class BlockSwapper:
    """The BlockSwap of one loaded ``NaDiT``: host copies, GPU slots, and the block runner.

    Made by ``apply_blockswap``; ``remove()`` puts every tensor back on the device and the model's
    default block loop back in place.
    """

    def __init__(self, model: nn.Module, swap: BlockSwap, device: torch.device | str) -> None:
        self.model = model
        self.swap = swap
        self.device = _resolve(torch.device(device))
        num_blocks = len(model.blocks)
        self.sequence = swap.sequence(num_blocks)
        self._next = {key: self.sequence[(i + 1) % len(self.sequence)] for i, key in enumerate(self.sequence)}
        members: dict[GroupKey, list[tuple[nn.Module, str, Tensor]]] = {key: [] for key in self.sequence}
        for name, module, attr, tensor in _tensor_slots(model):
            key = swap.group_of(name, num_blocks)
            if key is None:
                if tensor.device != self.device:
                    _point_one(module, attr, tensor.to(self.device))
            else:
                members[key].append((module, attr, tensor.contiguous()))
        self.groups = {key: _Group(key, entries) for key, entries in members.items()}
        self.num_slots = _num_slots(len(self.groups))
        copies_cls = _PlainCopies if self.device.type == "cpu" else _StreamCopies
        self._copies = copies_cls(self.device, self.num_slots)
        self._fill_hosts(members)
        del members  # the last references to the swapped tensors' device copies
        slot_bytes = max((g.nbytes for g in self.groups.values()), default=0)
        self.slots = [self._copies.slot(slot_bytes) for _ in range(self.num_slots)]
        for group in self.groups.values():
            group.slot_views = [group.views(slot) for slot in self.slots]
        self._owner: list[GroupKey | None] = [None] * self.num_slots
        self._loaded_at = [-1] * self.num_slots
        self._slot_of: dict[GroupKey, int] = {}
        self._attached: dict[GroupKey, int] = {}
        self._loads = 0
        self.copies = 0
        self.bytes_copied = 0
        self._hooks: list = []

    def _fill_hosts(self, members: dict[GroupKey, list[tuple[nn.Module, str, Tensor]]]) -> None:
        hosts = self._copies.host_buffers([g.nbytes for g in self.groups.values()])
        for group, host in zip(self.groups.values(), hosts):
            group.fill_host(host, [tensor for _, _, tensor in members[group.key]])

    # -- the seam ------------------------------------------------------------------------------

    def __call__(self, blocks: nn.ModuleList, vid: Tensor, txt: Tensor, ctx: BlockContext) -> tuple[Tensor, Tensor]:
        if blocks is not self.model.blocks:
            raise ValueError("this BlockSwap runner belongs to another model's blocks")
        try:
            # The embeddings have run: their slot may take the next group.
            self._detach(IO_IN)
            for index, block in enumerate(blocks):
                if index not in self.groups:
                    vid, txt = block(vid, txt, ctx)
                    continue
                self._attach(index)
                vid, txt = block(vid, txt, ctx)
                self._detach(index)
            if IO_OUT in self.groups:
                self._attach(IO_OUT)
        except BaseException:
            self.detach_all()
            raise
        return vid, txt

    def install(self) -> BlockSwapper:
        """Make this the model's block loop (and, with swap_io, attach the layers around it)."""
        self.model.block_runner = self
        if self.swap.swap_io:
            self._hooks = [
                self.model.register_forward_pre_hook(self._before_forward),
                self.model.register_forward_hook(self._after_forward, always_call=True),
            ]
        return self

    def remove(self) -> None:
        """Every tensor back on the device as a tensor of its own; the default loop restored."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self.model.block_runner is self:
            self.model.block_runner = run_blocks
        self.detach_all()
        for group in self.groups.values():
            group.point([view.to(self.device) for view in group.host_views])
            group.host, group.host_views, group.slot_views = None, [], []
        self.groups, self.sequence, self.slots = {}, [], []
        self._owner, self._loaded_at, self._slot_of = [], [], {}
        self.num_slots = 0

    # -- state, for callers and tests ----------------------------------------------------------

    @property
    def loaded(self) -> tuple[GroupKey | None, ...]:
        """The group each GPU slot holds (or is being filled with), by slot."""
        return tuple(self._owner)

    @property
    def attached(self) -> tuple[GroupKey, ...]:
        """Groups whose modules point at a slot right now."""
        return tuple(self._attached)

    @property
    def vram(self) -> WeightVRAM:
        return weight_vram(tensor_bytes(self.model), self.swap, len(self.model.blocks))

    def detach_all(self) -> None:
        for key in list(self._attached):
            self._detach(key)

    # -- the ring ------------------------------------------------------------------------------

    def _before_forward(self, module, args) -> None:
        self.detach_all()  # a call that raised may have left a group attached
        self._attach(IO_IN)

    def _after_forward(self, module, args, output) -> None:
        self.detach_all()

    def _attach(self, key: GroupKey) -> None:
        group = self.groups[key]
        slot = self._load(key, keep=None)
        # Group k+1 streams in while group k computes.
        self._load(self._next[key], keep=key)
        self._copies.wait_ready(slot)
        group.point(group.slot_views[slot])
        self._attached[key] = slot

    def _detach(self, key: GroupKey) -> None:
        slot = self._attached.pop(key, None)
        if slot is None:
            return
        group = self.groups[key]
        group.point(group.host_views)
        # Everything that reads the slot is queued by now; a copy into it waits for this.
        self._copies.mark_free(slot)

    def _load(self, key: GroupKey, keep: GroupKey | None) -> int:
        """The slot holding ``key``, copying it into the least recently filled other slot if needed."""
        if key in self._slot_of:
            return self._slot_of[key]
        candidates = [s for s in range(self.num_slots) if self._owner[s] is None or self._owner[s] != keep]
        slot = min(candidates, key=lambda s: self._loaded_at[s])
        evicted = self._owner[slot]
        if evicted is not None:
            if evicted in self._attached:
                raise RuntimeError(f"BlockSwap: slot {slot} is still in use by group {evicted!r}")
            del self._slot_of[evicted]
        group = self.groups[key]
        self._copies.copy(slot, self.slots[slot][: group.nbytes], group.host)
        self._owner[slot], self._slot_of[key] = key, slot
        self._loaded_at[slot] = self._loads
        self._loads += 1
        self.copies += 1
        self.bytes_copied += group.nbytes
        return slot


def apply_blockswap(model: nn.Module, swap: BlockSwap, device: torch.device | str = "cuda") -> BlockSwapper:
    """Keep ``swap``'s groups of a loaded ``NaDiT`` in host memory and install the runner.

    The model may be on ``device`` already, on the host, or loaded with a placement that left the
    swapped blocks on the host; afterwards the resident tensors are on ``device``, the swapped ones
    are views of host buffers (pinned on a GPU), and ``model(...)`` is called as before. Do not move
    the model (``.to``) while the swapper is installed.
    """
    return BlockSwapper(model, swap, device).install()


def _resolve(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _point_one(module: nn.Module, attr: str, tensor: Tensor) -> None:
    if attr in module._parameters:
        module._parameters[attr].data = tensor
    else:
        module._buffers[attr] = tensor

