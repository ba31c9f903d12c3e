"""BlockSwap: swapped DiT blocks (and the layers around them) live in host memory, pass through a
ring of device slots in order, and the output equals the plain block loop bit for bit.

The CPU tests run the swap logic with a CPU "device" (plain copies, no streams); the GPU tests run
the real thing: pinned host buffers, a copy stream and events.
"""

from __future__ import annotations

import gc

import pytest
import torch

from seedvr_cli.memory.blockswap import IO_IN, IO_OUT, BlockSwap, apply_blockswap, tensor_bytes, weight_vram
from seedvr_cli.models.dit import NaDiT, run_blocks
from seedvr_cli.models.dit_config import dit_config
from seedvr_cli.weights.loader import load_dit
from seedvr_cli.weights.quantized import Fp8Linear, GGUFLinear
from seedvr_cli.weights.synthesize import write_checkpoint

SEED = 7
FORMATS = ("fp16", "fp8_e4m3fn", "gguf-q4_k_m")
VARIANTS = ("tiny-3b", "tiny-7b")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("blockswap")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for variant in VARIANTS:
        for fmt in FORMATS:
            suffix = ".gguf" if fmt.startswith("gguf") else ".safetensors"
            out[variant, fmt] = write_checkpoint(variant, fmt, root / variant / f"{fmt}{suffix}", seed=SEED)
    torch.set_num_threads(before)
    return out


def _inputs(device="cpu"):
    gen = torch.Generator().manual_seed(0)
    t, h, w = 2, 6, 8  # latent grid; the DiT patches 1x2x2
    vid = torch.randn(t * h * w, 33, generator=gen)
    txt = torch.randn(10, 64, generator=gen)
    return tuple(x.to(device) for x in (vid, txt, torch.tensor([[t, h, w]]), torch.tensor([[10]]),
                                        torch.tensor([1000.0])))  # fmt: skip


def _forward(model, inputs):
    with torch.inference_mode():
        return model(*inputs)


def _within(tensor, host):
    start = host.data_ptr()
    return start <= tensor.data_ptr() < start + host.numel()


# ---------------------------------------------------------------------------------------------
# CPU: the logic


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_output_equals_the_plain_loop_bit_for_bit(files, variant, fmt):
    inputs = _inputs()
    expected = _forward(load_dit(files[variant, fmt], compute_dtype=torch.float32), inputs)
    num_blocks = dit_config(variant).num_layers
    for blocks_to_swap in (1, 3, num_blocks):
        for swap_io in (False, True):
            model = load_dit(files[variant, fmt], compute_dtype=torch.float32)
            swapper = apply_blockswap(model, BlockSwap(blocks_to_swap, swap_io), device="cpu")
            assert model.block_runner is swapper
            # The second call starts from what the first prefetched for it.
            for call in range(2):
                got = _forward(model, inputs)
                assert torch.equal(got, expected), (blocks_to_swap, swap_io, call)


def test_blocks_run_in_order_once_each_with_the_next_group_already_loading(files):
    model = load_dit(files["tiny-3b", "fp16"], compute_dtype=torch.float32)
    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=3, swap_io=True), device="cpu")
    assert swapper.sequence == [IO_IN, 0, 1, 2, IO_OUT]
    seen = []
    for index, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda module, args, index=index: seen.append(
            (index, swapper.attached, swapper.loaded, next(module.parameters()).data_ptr())))  # fmt: skip
    inputs = _inputs()
    copies = []
    for _ in range(3):
        seen.clear()
        _forward(model, inputs)
        copies.append(swapper.copies)
        assert [index for index, *_ in seen] == [0, 1, 2, 3]
        following = {0: 1, 1: 2, 2: IO_OUT}
        for index, attached, loaded, weight_ptr in seen[:3]:
            group = swapper.groups[index]
            assert attached == (index,)
            assert set(loaded) == {index, following[index]}  # this block, and the next one on its way
            assert _within_slot(weight_ptr, swapper) and not group.host.data_ptr() <= weight_ptr < (
                group.host.data_ptr() + group.nbytes)  # fmt: skip
        assert seen[3][1] == ()  # resident block: nothing swapped in for it
        # Released after the call: every swapped tensor is a view of its host copy again, and the
        # slots hold the output layers and, already, the input layers of the next call.
        assert swapper.attached == ()
        assert set(swapper.loaded) == {IO_OUT, IO_IN}
        for key, group in swapper.groups.items():
            for module, attr, _ in group.members:
                assert _within(getattr(module, attr), group.host), (key, attr)
    # Five groups: the first call also fetches the next call's first group; later calls copy each
    # group exactly once.
    assert copies == [6, 11, 16]


def _within_slot(ptr, swapper):
    return any(slot.data_ptr() <= ptr < slot.data_ptr() + slot.numel() for slot in swapper.slots)


def test_two_swapped_groups_stay_in_their_slots(files):
    model = load_dit(files["tiny-7b", "fp16"], compute_dtype=torch.float32)
    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=2), device="cpu")
    inputs = _inputs()
    expected = _forward(load_dit(files["tiny-7b", "fp16"], compute_dtype=torch.float32), inputs)
    for _ in range(3):
        assert torch.equal(_forward(model, inputs), expected)
    assert swapper.copies == 2 and set(swapper.loaded) == {0, 1}


@pytest.mark.parametrize("fmt", ["fp8_e4m3fn", "gguf-q4_k_m"])
def test_compressed_blocks_stay_compressed_on_the_host_and_travel_as_stored(files, fmt):
    plain = load_dit(files["tiny-3b", fmt], compute_dtype=torch.float32)
    model = load_dit(files["tiny-3b", fmt], compute_dtype=torch.float32)
    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=4), device="cpu")
    kind, dtype = (Fp8Linear, torch.float8_e4m3fn) if fmt.startswith("fp8") else (GGUFLinear, torch.uint8)
    compressed = [(name, m) for name, m in model.named_modules() if isinstance(m, kind)]
    assert compressed
    for name, module in compressed:
        block = int(name.split(".")[1]) if name.startswith("blocks.") else None
        assert module.weight.dtype == dtype, name
        if block is not None:
            assert _within(module.weight, swapper.groups[block].host), name
            assert torch.equal(module.weight, plain.get_submodule(name).weight), name
    stored = sum(n for name, n in tensor_bytes(plain).items() if name.startswith("blocks."))
    _forward(model, _inputs())
    copies, copied = swapper.copies, swapper.bytes_copied
    _forward(model, _inputs())
    # A call moves each block once, at its stored size (plus alignment padding only).
    per_call = swapper.bytes_copied - copied
    assert swapper.copies - copies == 4
    assert stored <= per_call <= stored + 512 * len(tensor_bytes(plain))
    assert per_call == swapper.vram.offloaded


def test_weight_vram_is_what_the_swapper_allocates(files):
    model = load_dit(files["tiny-3b", "fp8_e4m3fn"], compute_dtype=torch.float32)
    sizes = tensor_bytes(model)
    swap = BlockSwap(blocks_to_swap=3, swap_io=True)
    predicted = weight_vram(sizes, swap, num_blocks=4)
    swapper = apply_blockswap(model, swap, device="cpu")
    assert sum(slot.numel() for slot in swapper.slots) == predicted.slots
    assert sum(group.nbytes for group in swapper.groups.values()) == predicted.offloaded
    resident = [t for name, t in model.state_dict().items() if name.startswith("blocks.3.")]
    assert predicted.resident == sum(-(-t.numel() * t.element_size() // 512) * 512 for t in resident)
    assert swapper.vram == predicted


@pytest.mark.parametrize("variant", ["3b", "7b"])
def test_weight_vram_of_the_real_sizes(variant):
    config = dit_config(variant)
    with torch.device("meta"):
        model = NaDiT(config).half()
    sizes = tensor_bytes(model)
    everything = sum(-(-n // 512) * 512 for n in sizes.values())
    block_bytes = [sum(-(-n // 512) * 512 for name, n in sizes.items() if name.startswith(f"blocks.{i}."))
                   for i in range(config.num_layers)]  # fmt: skip
    totals = []
    for n in (0, 2, 8, 16, config.num_layers):
        vram = weight_vram(sizes, BlockSwap(n), config.num_layers)
        assert vram.resident + vram.offloaded == everything
        assert vram.offloaded == sum(block_bytes[:n])
        # The first block is a largest one (separate video and text weights), so it sizes the slots.
        assert vram.slots == min(n, 2) * max(block_bytes[:n], default=0) == min(n, 2) * (block_bytes[0] if n else 0)
        totals.append(vram.total)
    assert totals[0] == everything and totals[1] == everything  # two slots cost two blocks
    assert totals[1] > totals[2] > totals[3] > totals[4]
    all_in = weight_vram(sizes, BlockSwap(config.num_layers, swap_io=True), config.num_layers)
    assert all_in.resident == 0 and all_in.total == 2 * block_bytes[0]
    # fp16 3B: 6.5 GB of weights on the device without swapping, two blocks' worth with all swapped.
    if variant == "3b":
        assert 6.0e9 < everything < 7.0e9 and all_in.total < 0.7e9


def test_a_failing_block_leaves_nothing_attached(files):
    model = load_dit(files["tiny-3b", "fp16"], compute_dtype=torch.float32)
    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=4, swap_io=True), device="cpu")
    inputs = _inputs()
    expected = _forward(load_dit(files["tiny-3b", "fp16"], compute_dtype=torch.float32), inputs)

    def fail(module, args):
        raise RuntimeError("out of memory, say")

    hook = model.blocks[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        _forward(model, inputs)
    assert swapper.attached == ()
    assert _within(model.blocks[1].mlp.vid.proj_in.weight, swapper.groups[1].host)
    hook.remove()
    assert torch.equal(_forward(model, inputs), expected)


def test_remove_restores_the_plain_model(files):
    model = load_dit(files["tiny-7b", "gguf-q4_k_m"], compute_dtype=torch.float32)
    inputs = _inputs()
    expected = _forward(model, inputs)
    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=3, swap_io=True), device="cpu")
    assert model._forward_pre_hooks and model._forward_hooks
    _forward(model, inputs)
    swapper.remove()
    assert model.block_runner is run_blocks
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert torch.equal(_forward(model, inputs), expected)


def test_settings_and_groups():
    for bad in (dict(blocks_to_swap=-1), dict(blocks_to_swap=1.5), dict(blocks_to_swap=True),
                dict(offload_device="cuda:1")):  # fmt: skip
        with pytest.raises(ValueError):
            BlockSwap(**bad)
    with pytest.raises(ValueError, match="more than the model's 32 blocks"):
        BlockSwap(33).sequence(32)
    swap = BlockSwap(2, swap_io=True)
    assert swap.sequence(32) == [IO_IN, 0, 1, IO_OUT]
    assert [swap.group_of(n, 32) for n in ("blocks.1.attn.proj_qkv.vid.weight", "blocks.2.ada.all.attn_gate",
                                           "vid_in.proj.weight", "emb_in.proj_out.bias", "txt_in.weight",
                                           "vid_out.proj.weight", "vid_out_ada.out_shift")] == [
        1, None, IO_IN, IO_IN, IO_IN, IO_OUT, IO_OUT]  # fmt: skip
    assert BlockSwap(2).group_of("vid_in.proj.weight", 32) is None


def test_the_runner_refuses_another_models_blocks(files):
    model = load_dit(files["tiny-3b", "fp16"], compute_dtype=torch.float32)
    other = load_dit(files["tiny-3b", "fp16"], compute_dtype=torch.float32)
    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=2), device="cpu")
    with pytest.raises(ValueError, match="another model"):
        other(*_inputs(), block_runner=swapper)
    assert swapper.attached == ()


# ---------------------------------------------------------------------------------------------
# GPU: streams, events, pinned memory


def _placement(num_blocks: int):
    return lambda name: "cpu" if name.startswith("blocks.") and int(name.split(".")[1]) < num_blocks else "cuda"


@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_gpu_output_is_identical_to_no_swapping(files, variant, fmt):
    inputs = _inputs("cuda")
    compute = torch.float16 if fmt == "fp16" else torch.float32
    expected = _forward(load_dit(files[variant, fmt], device="cuda", compute_dtype=compute), inputs)
    num_blocks = dit_config(variant).num_layers
    for blocks_to_swap in (1, 3, num_blocks):
        for swap_io in (False, True):
            # As the run layer will load: the swapped blocks never reach the device.
            model = load_dit(files[variant, fmt], device="cuda", compute_dtype=compute,
                             placement=_placement(blocks_to_swap))  # fmt: skip
            swapper = apply_blockswap(model, BlockSwap(blocks_to_swap, swap_io), device="cuda")
            for call in range(3):
                assert torch.equal(_forward(model, inputs), expected), (blocks_to_swap, swap_io, call)
            swapper.remove()
            assert torch.equal(_forward(model, inputs), expected)


@pytest.mark.gpu
def test_gpu_streams_are_ordered_by_events_not_by_luck(files):
    # Stall the compute stream before each block and the copy stream before each copy: without the
    # "free" events a prefetch would overwrite a slot still being read, without the "ready" events
    # a block would read a slot still being filled.
    inputs = _inputs("cuda")
    expected = _forward(load_dit(files["tiny-3b", "fp16"], device="cuda", compute_dtype=torch.float32), inputs)
    model = load_dit(files["tiny-3b", "fp16"], device="cuda", compute_dtype=torch.float32)
    swapper = apply_blockswap(model, BlockSwap(blocks_to_swap=4, swap_io=True), device="cuda")
    copies = swapper._copies
    plain_copy = copies.copy

    def slow_copy(slot, dst, src):
        with torch.cuda.stream(copies.stream):
            torch.cuda._sleep(2_000_000)
        plain_copy(slot, dst, src)

    for stall_copies in (False, True):
        copies.copy = slow_copy if stall_copies else plain_copy
        hooks = [] if stall_copies else [
            block.register_forward_pre_hook(lambda *_: torch.cuda._sleep(2_000_000)) for block in model.blocks]
        for _ in range(3):
            assert torch.equal(_forward(model, inputs), expected), stall_copies
        for hook in hooks:
            hook.remove()


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", FORMATS)
def test_gpu_swapped_blocks_are_not_resident_and_stay_as_stored_in_pinned_memory(files, fmt):
    gc.collect()  # earlier tests' models must not be freed in the middle of this count
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    model = load_dit(files["tiny-3b", fmt], device="cuda", compute_dtype=torch.float32)
    torch.cuda.synchronize()
    loaded = torch.cuda.memory_allocated() - baseline
    swap = BlockSwap(blocks_to_swap=4, swap_io=True)
    predicted = weight_vram(tensor_bytes(model), swap, num_blocks=4)
    assert predicted.resident + predicted.offloaded == loaded  # the helper counts as the allocator does
    swapper = apply_blockswap(model, swap, device="cuda")
    torch.cuda.synchronize()
    after = torch.cuda.memory_allocated() - baseline
    # Everything went to the host; only the two slots remain on the device.
    assert after == predicted.total == predicted.slots
    assert loaded - after == predicted.offloaded - predicted.slots > 0
    for key, group in swapper.groups.items():
        assert group.host.is_pinned(), key
        for module, attr, _ in group.members:
            assert getattr(module, attr).device.type == "cpu", (key, attr)
    stored = {torch.float8_e4m3fn: Fp8Linear, torch.uint8: GGUFLinear}
    for name, module in model.named_modules():
        if isinstance(module, (Fp8Linear, GGUFLinear)):
            assert isinstance(module, stored[module.weight.dtype]) and module.weight.is_pinned(), name
    inputs = _inputs("cuda")
    allocated = []
    for _ in range(2):
        _forward(model, inputs)
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    # A call leaves nothing behind but the model's cached window plans, made by the first call.
    assert allocated[1] == allocated[0]
