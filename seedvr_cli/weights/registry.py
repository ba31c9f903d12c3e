"""The published SeedVR2 files: where each lives on Hugging Face, its size, sha256 and what it is.

Facts come from the reference manifests' ``published_checkpoints`` (hashes from the ComfyUI node's
registry and third-party validation caches). ``sha256=None`` means no trusted hash is known: such a
file is checked for its model and format when loaded, not for its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFile:
    name: str  # the file name users know (ComfyUI's models/SEEDVR2/<name>)
    repo: str  # Hugging Face repository
    path: str  # path inside the repository
    kind: str  # "dit", "vae", "text_embedding"; FlashVSR: "flashvsr-dit", "-lq-proj", "-tcdecoder", "-vae"
    variant: str  # "3b", "7b", "7b-sharp", "vae", "text", "flashvsr-v1.0", "flashvsr-v1.1"
    format: str  # "fp32", "fp16", "fp8_e4m3fn", "fp8_e4m3fn_mixed", "gguf-Q4_K_M", "bf16", ...
    sha256: str | None = None
    size: int | None = None  # exact bytes when known
    approx_size: float | None = None  # GB as listed by the host, when the exact size is unknown
    note: str = ""
    aliases: tuple[str, ...] = ()
    # Files published only outside Hugging Face (FlashVSR's prompt embedding, on GitHub): fetched from
    # this address instead of ``repo``/``path`` (which then name where it is published).
    url: str | None = None

    @property
    def size_label(self) -> str:
        if self.size is not None:
            return f"{self.size / 1e9:.2f} GB" if self.size >= 1e8 else f"{self.size / 1e6:.2f} MB"
        if self.approx_size is not None:
            return f"~{self.approx_size:.2f} GB"
        return "?"


_NUMZ = "numz/SeedVR2_comfyUI"
_AINVFX = "AInVFX/SeedVR2_comfyUI"
_COMFY_ORG = "Comfy-Org/SeedVR2"
_OFFICIAL_3B = "ByteDance-Seed/SeedVR2-3B"
_OFFICIAL_7B = "ByteDance-Seed/SeedVR2-7B"

_FP8_7B_NOTE = "plain 7B fp8 is known to produce artifacts: prefer the mixed_block35_fp16 file"
_COMFY_ORG_NOTE = "Comfy-Org repackage; tensor names and path in the repo not verified from here"

TEXT_EMBEDDING = "pos_emb.pt"

MODEL_FILES: tuple[ModelFile, ...] = (
    # --- 3B DiT
    ModelFile("seedvr2_ema_3b_fp8_e4m3fn.safetensors", _NUMZ, "seedvr2_ema_3b_fp8_e4m3fn.safetensors", "dit",
              "3b", "fp8_e4m3fn", "3bf1e43ebedd570e7e7a0b1b60d6a02e105978f505c8128a241cde99a8240cff", 3391544696,
              note="the ComfyUI node's default DiT; no scales, upcast per layer", aliases=("3b-fp8",)),
    ModelFile("seedvr2_ema_3b_fp16.safetensors", _NUMZ, "seedvr2_ema_3b_fp16.safetensors", "dit", "3b", "fp16",
              "2fd0e03a3dad24e07086750360727ca437de4ecd456f769856e960ae93e2b304", approx_size=6.78,
              aliases=("3b-fp16", "3b")),
    ModelFile("seedvr2_ema_3b-Q4_K_M.gguf", _AINVFX, "seedvr2_ema_3b-Q4_K_M.gguf", "dit", "3b", "gguf-Q4_K_M",
              "e665e3909de1a8c88a69c609bca9d43ff5a134647face2ce4497640cc3597f0e", approx_size=1.91,
              note="sourced from cmeka/SeedVR2-GGUF; dequantized per layer", aliases=("3b-q4_k_m",)),
    ModelFile("seedvr2_ema_3b-Q8_0.gguf", _AINVFX, "seedvr2_ema_3b-Q8_0.gguf", "dit", "3b", "gguf-Q8_0",
              "be0d60083a2051a265eb4b77f28edf494e6db67ffc250216f32b72292e5cbd96", approx_size=3.60,
              aliases=("3b-q8_0",)),
    ModelFile("seedvr2_ema_3b.pth", _OFFICIAL_3B, "seedvr2_ema_3b.pth", "dit", "3b", "fp32", approx_size=13.57,
              note="official ByteDance checkpoint", aliases=("3b-fp32",)),
    ModelFile("seedvr2_3b_fp16.safetensors", _COMFY_ORG, "seedvr2_3b_fp16.safetensors", "dit", "3b", "fp16",
              note=_COMFY_ORG_NOTE),
    ModelFile("seedvr2_3b_fp8_e4m3fn.safetensors", _COMFY_ORG, "seedvr2_3b_fp8_e4m3fn.safetensors", "dit", "3b",
              "fp8_e4m3fn", note=_COMFY_ORG_NOTE),
    # --- 7B DiT
    ModelFile("seedvr2_ema_7b_fp16.safetensors", _NUMZ, "seedvr2_ema_7b_fp16.safetensors", "dit", "7b", "fp16",
              "7b8241aa957606ab6cfb66edabc96d43234f9819c5392b44d2492d9f0b0bbe4a", approx_size=16.5,
              aliases=("7b-fp16", "7b")),
    ModelFile("seedvr2_ema_7b_sharp_fp16.safetensors", _NUMZ, "seedvr2_ema_7b_sharp_fp16.safetensors", "dit",
              "7b-sharp", "fp16", "20a93e01ff24beaeebc5de4e4e5be924359606c356c9c51509fba245bd2d77dd",
              approx_size=16.5, note="sharper output, same architecture", aliases=("7b-sharp-fp16", "7b-sharp")),
    ModelFile("seedvr2_ema_7b_fp8_e4m3fn_mixed_block35_fp16.safetensors", _AINVFX,
              "seedvr2_ema_7b_fp8_e4m3fn_mixed_block35_fp16.safetensors", "dit", "7b", "fp8_e4m3fn_mixed",
              "3d68b5ec0b295ae28092e355c8cad870edd00b817b26587d0cb8f9dd2df19bb2", approx_size=8.47,
              note="fp8 except block 35 in fp16: the 7B fp8 to use", aliases=("7b-fp8-mixed", "7b-fp8")),
    ModelFile("seedvr2_ema_7b_sharp_fp8_e4m3fn_mixed_block35_fp16.safetensors", _AINVFX,
              "seedvr2_ema_7b_sharp_fp8_e4m3fn_mixed_block35_fp16.safetensors", "dit", "7b-sharp", "fp8_e4m3fn_mixed",
              "0d2c5b8be0fda94351149c5115da26aef4f4932a7a2a928c6f184dda9186e0be", approx_size=8.47,
              note="sharp variant, fp8 except block 35 in fp16", aliases=("7b-sharp-fp8-mixed", "7b-sharp-fp8")),
    ModelFile("seedvr2_ema_7b_fp8_e4m3fn.safetensors", _NUMZ, "seedvr2_ema_7b_fp8_e4m3fn.safetensors", "dit", "7b",
              "fp8_e4m3fn", approx_size=8.24, note=_FP8_7B_NOTE + " (older upload, no trusted hash)"),
    ModelFile("seedvr2_ema_7b_sharp_fp8_e4m3fn.safetensors", _NUMZ, "seedvr2_ema_7b_sharp_fp8_e4m3fn.safetensors",
              "dit", "7b-sharp", "fp8_e4m3fn", approx_size=8.24,
              note=_FP8_7B_NOTE + " (older upload, no trusted hash)"),
    ModelFile("seedvr2_ema_7b-Q4_K_M.gguf", _AINVFX, "seedvr2_ema_7b-Q4_K_M.gguf", "dit", "7b", "gguf-Q4_K_M",
              "db9cb2ad90ebd40d2e8c29da2b3fc6fd03ba87cd58cbadceccca13ad27162789", approx_size=4.64,
              aliases=("7b-q4_k_m",)),
    ModelFile("seedvr2_ema_7b_sharp-Q4_K_M.gguf", _AINVFX, "seedvr2_ema_7b_sharp-Q4_K_M.gguf", "dit", "7b-sharp",
              "gguf-Q4_K_M", "7aed800ac4eb8e0d18569a954c0ff35f5a1caa3ed5d920e66cc31405f75b6e69", approx_size=4.64,
              aliases=("7b-sharp-q4_k_m",)),
    ModelFile("seedvr2_ema_7b.pth", _OFFICIAL_7B, "seedvr2_ema_7b.pth", "dit", "7b", "fp32", approx_size=32.96,
              note="official ByteDance checkpoint", aliases=("7b-fp32",)),
    ModelFile("seedvr2_ema_7b_sharp.pth", _OFFICIAL_7B, "seedvr2_ema_7b_sharp.pth", "dit", "7b-sharp", "fp32",
              approx_size=32.96, note="official ByteDance checkpoint, sharp variant", aliases=("7b-sharp-fp32",)),
    # --- VAE (shared by 3B and 7B)
    ModelFile("ema_vae_fp16.safetensors", _NUMZ, "ema_vae_fp16.safetensors", "vae", "vae", "fp16",
              "20678548f420d98d26f11442d3528f8b8c94e57ee046ef93dbb7633da8612ca1", approx_size=0.50,
              aliases=("vae-fp16", "vae")),
    ModelFile("ema_vae.pth", _OFFICIAL_3B, "ema_vae.pth", "vae", "vae", "fp32",
              note="official ByteDance checkpoint (stored dtype not verified from here)", aliases=("vae-fp32",)),
    # --- positive text embedding (58 x 5120 bf16); one-step SR never uses the negative one
    ModelFile(TEXT_EMBEDDING, _OFFICIAL_3B, "pos_emb.pt", "text_embedding", "text", "bf16",
              "fa07a14844314772266b66c3b95deb0027696d8fe7065721263db5176f45d799", 595100,
              note=("ships beside the official scripts (GitHub ByteDance-Seed/SeedVR) and in the ComfyUI node's "
                    "repo; this Hugging Face location is the one third-party code pins; not verified from here"),
              aliases=("pos-emb", "text-embedding")),
)  # fmt: skip

# FlashVSR (../shared/reference/flashvsr/WEIGHTS.md): the repositories of both versions hold the
# same four file names, so each entry is named by its repository's folder (FlashVSR/...,
# FlashVSR-v1.1/...); --model-dir may hold either that path or the bare file name.
# posi_prompt.pth (the prompt embedding) is not on Hugging Face: it ships in the GitHub repositories.
_FLASHVSR_REPOS = {"1.0": "JunhaoZhuang/FlashVSR", "1.1": "JunhaoZhuang/FlashVSR-v1.1"}
_FLASHVSR_FILES = (
    ("diffusion_pytorch_model_streaming_dmd.safetensors", "flashvsr-dit", "dit", "bf16",
     "DiT (Wan2.1 1.3B topology, 1.42 B parameters), every mode"),
    ("LQ_proj_in.ckpt", "flashvsr-lq-proj", "lq-proj", "ckpt",
     "LQ projector (288 M parameters), every mode"),
    ("TCDecoder.ckpt", "flashvsr-tcdecoder", "tcdecoder", "ckpt",
     "tiny conditional decoder (45 M), modes tiny and tiny-long"),
    ("Wan2.1_VAE.pth", "flashvsr-vae", "vae", "pth", "Wan2.1 VAE (decoder 73 M used), mode full"),
)
MODEL_FILES += tuple(
    ModelFile(f"{repo.split('/')[1]}/{file}", repo, file, kind, f"flashvsr-v{version}", fmt,
              note=note + ("" if version == "1.0" else "; repository name from the official v1.1 scripts, not "
                           "verified from here (the ComfyUI node fetches JunhaoZhuang/FlashVSR-1.1)"),
              aliases=(f"flashvsr-v{version}-{alias}",))
    for version, repo in _FLASHVSR_REPOS.items() for file, kind, alias, fmt, note in _FLASHVSR_FILES
)


# Both versions' repositories ship the same prompt file; the official one is fetched.
_FLASHVSR_PROMPT_REPO = "OpenImagingLab/FlashVSR"
_FLASHVSR_PROMPT_PATH = "examples/WanVSR/prompt_tensor/posi_prompt.pth"
FLASHVSR_PROMPT = ModelFile(
    "posi_prompt.pth", _FLASHVSR_PROMPT_REPO, _FLASHVSR_PROMPT_PATH, "flashvsr-prompt", "flashvsr", "pth",
    note=("precomputed prompt embedding, every FlashVSR model; published on GitHub (not Hugging Face), fetched "
          "from the official repository's main branch: address and size not verified from here"),
    aliases=("flashvsr-prompt",),
    url=f"https://github.com/{_FLASHVSR_PROMPT_REPO}/raw/main/{_FLASHVSR_PROMPT_PATH}",
)
MODEL_FILES += (FLASHVSR_PROMPT,)


def flashvsr_files(version: str, mode: str) -> tuple[ModelFile, ...]:
    """The published files a FlashVSR model of ``version`` needs in ``mode`` (DiT, LQ projector, decoder)."""
    decoder = "flashvsr-vae" if mode == "full" else "flashvsr-tcdecoder"
    return tuple(e for e in MODEL_FILES if e.variant == f"flashvsr-v{version}"
                 and e.kind in ("flashvsr-dit", "flashvsr-lq-proj", decoder))


_BY_NAME: dict[str, ModelFile] = {}
for _entry in MODEL_FILES:
    for _key in (_entry.name, *_entry.aliases):
        if _key.lower() in _BY_NAME:
            raise RuntimeError(f"duplicate registry name {_key!r}")
        _BY_NAME[_key.lower()] = _entry


def find_model(name: str) -> ModelFile | None:
    """The entry called ``name`` (file name or alias, case-insensitive), or None."""
    return _BY_NAME.get(name.strip().lower())


def get_model(name: str) -> ModelFile:
    entry = find_model(name)
    if entry is None:
        from seedvr_cli.errors import UsageError

        raise UsageError(f"unknown model {name!r}: run `seedvr models list` for the known names, or pass a file path")
    return entry


def text_embedding_entry() -> ModelFile:
    return get_model(TEXT_EMBEDDING)
