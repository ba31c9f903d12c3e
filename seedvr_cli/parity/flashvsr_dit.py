"""FlashVSR DiT + LQ projector parity on a directory in the format of ``shared/fixtures/flashvsr``.

The directory holds ``tiny_io.safetensors`` (inputs, recorded outputs, and in its metadata the DiT
config, the attention knobs and the recipe of the LQ video), ``tiny_dit_weights.safetensors`` and
``tiny_lqproj_v10/v11_weights.safetensors``. For each version the clip streams through the
projector and the DiT in the reference's chunk schedule (6 latent frames, then 2), and every
recorded output is compared: LQ tokens and DiT velocity per chunk, block 0's K cache after each
chunk, the final latents, and the non-streaming projector output.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from seedvr_cli.models.flashvsr.dit import DiTStreamState, FlashDiT
from seedvr_cli.models.flashvsr.dit_config import FlashDiTConfig, SparseAttentionSettings
from seedvr_cli.models.flashvsr.lq_proj import LQProjConfig, LQProjector, LQProjState
from seedvr_cli.parity import CaseResult, compare

TOLERANCE = 1e-5  # the fixtures' README: max abs for a faithful float32 implementation
IO_FILE = "tiny_io.safetensors"
DIT_FILE = "tiny_dit_weights.safetensors"
VERSIONS = {"v10": "v1.0", "v11": "v1.1"}


def detect(fixture_dir: Path) -> bool:
    return (Path(fixture_dir) / IO_FILE).is_file() and (Path(fixture_dir) / DIT_FILE).is_file()


def fixture_metadata(fixture_dir: Path) -> dict[str, str]:
    with safe_open(str(Path(fixture_dir) / IO_FILE), "pt") as f:
        return dict(f.metadata() or {})


def dit_config_from_metadata(text: str) -> FlashDiTConfig:
    """``"dim=48,heads=2,layers=2,ffn=96,text_dim=32,freq_dim=16,eps=1e-6,patch=(1,2,2)"``."""
    fields = dict(re.findall(r"(\w+)=(\([^)]*\)|[^,]+)", text.replace(" ", "")))
    patch = tuple(int(p) for p in fields.get("patch", "(1,2,2)").strip("()").split(","))
    return FlashDiTConfig(
        name="fixture",
        dim=int(fields["dim"]),
        heads=int(fields["heads"]),
        num_layers=int(fields["layers"]),
        ffn_dim=int(fields["ffn"]),
        text_dim=int(fields["text_dim"]),
        freq_dim=int(fields["freq_dim"]),
        eps=float(fields.get("eps", "1e-6")),
        patch=patch,
    )


def lq_video(frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixture's LQ clip in [-1, 1] and as uint8, regenerated from its recipe (seed 1)."""
    generator = torch.Generator().manual_seed(1)
    lq_u8 = torch.randint(0, 256, (1, 3, frames, height, width), generator=generator, dtype=torch.uint8)
    return lq_u8.float() / 255 * 2 - 1, lq_u8


def load_projector(fixture_dir: Path, prefix: str) -> LQProjector:
    weights = load_file(Path(fixture_dir) / f"tiny_lqproj_{prefix}_weights.safetensors")
    head = f"{prefix}.lq_proj."
    state = {name[len(head):]: t.float() for name, t in weights.items() if name.startswith(head)}
    config = LQProjConfig("fixture", in_channels=state["conv1.weight"].shape[1] // 256,
                          hidden1=state["conv1.weight"].shape[0], hidden2=state["conv2.weight"].shape[0],
                          out_dim=state["linear_layers.0.weight"].shape[0])  # fmt: skip
    model = LQProjector(config, VERSIONS[prefix])
    model.load_state_dict(state, strict=True)
    return model.eval()


def chunk_clips(chunk: int) -> list[tuple[int, int]]:
    """LQ frame ranges the projector streams for a DiT chunk (6 latent frames, then 2 at a time)."""
    if chunk == 0:
        return [(0, 1)] + [(4 * j - 3, 4 * j + 1) for j in range(1, 7)]
    return [(8 * chunk + 17, 8 * chunk + 21), (8 * chunk + 21, 8 * chunk + 25)]


def chunk_frames(chunk: int) -> tuple[int, int]:
    """Latent frames of a DiT chunk."""
    return (0, 6) if chunk == 0 else (4 + 2 * chunk, 6 + 2 * chunk)


def stream_version(dit: FlashDiT, projector: LQProjector, lq: torch.Tensor, context: torch.Tensor,
                   noise: torch.Tensor, settings: SparseAttentionSettings) -> dict[str, torch.Tensor]:  # fmt: skip
    """Our outputs under the fixture's names (without the version prefix)."""
    ours: dict[str, torch.Tensor] = {}
    chunks = (lq.shape[2] - 1) // 8 - 2
    proj_state = LQProjState()
    dit_state: DiTStreamState = dit.start_stream(context)
    latents = []
    for chunk in range(chunks):
        tokens = [projector.stream(lq[:, :, a:b], proj_state) for a, b in chunk_clips(chunk)]
        tokens = torch.cat([t for t in tokens if t is not None], dim=1)
        a, b = chunk_frames(chunk)
        velocity = dit.forward_chunk(noise[:, :, a:b], tokens, dit_state, settings)
        latents.append(noise[:, :, a:b] - velocity)
        ours[f"lq_tokens_chunk{chunk}"] = tokens
        ours[f"dit_out_chunk{chunk}"] = velocity
        ours[f"cache_k_blk0_chunk{chunk}"] = dit_state.self_kv[0].k
    ours["latents"] = torch.cat(latents, dim=2)
    ours["lq_tokens_forward_nonstream"] = projector(lq)
    return ours


@contextmanager
def native_cpu_kernels():
    """oneDNN off for the duration (set directly: its ``flags()`` helper also touches TF32 and warns)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def run(fixture_dir: Path, backend: str = "reference") -> list[CaseResult]:
    fixture_dir = Path(fixture_dir)
    meta = fixture_metadata(fixture_dir)
    io = load_file(fixture_dir / IO_FILE)
    frames, height, width = int(meta["F"]), int(meta["H"]), int(meta["W"])
    lq, lq_u8 = lq_video(frames, height, width)
    results = [
        compare("lq_recipe", "lq_u8_sum", lq_u8.double().sum().reshape(1), io["lq_u8_sum"], 0.0),
        compare("lq_recipe", "lq_u8_first_row", lq_u8[0, :, :, 0].float(), io["lq_u8_first_row"], 0.0),
    ]
    dit = FlashDiT(dit_config_from_metadata(meta["dit"]))
    dit.load_state_dict({k: t.float() for k, t in load_file(fixture_dir / DIT_FILE).items()}, strict=True)
    dit.eval()
    settings = SparseAttentionSettings(topk_ratio=float(meta["topk_ratio"]), kv_ratio=float(meta["kv_ratio"]),
                                       local_range=int(meta["local_range"]), backend=backend)  # fmt: skip
    for prefix in VERSIONS:
        if not (fixture_dir / f"tiny_lqproj_{prefix}_weights.safetensors").is_file():
            continue
        # oneDNN's float32 conv3d sums the projector's 27,648-long dot products less exactly than
        # the native kernel (1.3e-5 vs 2.3e-6 max abs on the tokens; float64 gives 2.2e-6), so the
        # check runs on the native kernels: it measures the model, not the convolution library.
        with torch.no_grad(), native_cpu_kernels():
            ours = stream_version(dit, load_projector(fixture_dir, prefix), lq, io["context"], io["noise"], settings)
        for name, value in ours.items():
            key = f"{prefix}_{name}"
            if key in io:
                results.append(compare(f"flashvsr_{prefix}", name, value, io[key], TOLERANCE))
    return results
