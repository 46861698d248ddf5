"""A hookable Llama-style transformer on real weights, with its tokenizer, loaders and generation.

    from model import load, generate
    net, enc = load()                      # SmolLM2-135M-Instruct, float32, CPU
    logits, cache = net.run_with_cache(torch.tensor([enc.encode("Hello")]))
    cache["blocks.0.attn.hook_pattern"]    # (1, 9, T, T)
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .generation import generate
from .loaders import Checkpoint, CheckpointError, build_model, fetch_hub, read_hf_dir
from .sampling import SamplerSettings
from .sentencepiece import encoding_for
from .tokenizer import ModelEncoding, UnencodableTextError, available_encodings, get_encoding
from .transformer import KVCache, ModelConfig, Transformer
from .weights import GEMMA_NOTICE, default_gguf, gemma_gguf, load_gguf_cached

DEFAULT_MODEL = "smollm2-135m-instruct"
GEMMA_MODEL = "gemma3-270m"  # Gemma 3 270M, the base model (Gemma Terms of Use)
PRESETS = (DEFAULT_MODEL, GEMMA_MODEL)  # names load() knows; their numbers come from the GGUF itself
NOTICES = {GEMMA_MODEL: GEMMA_NOTICE}  # what a preset's license asks to be shown wherever it is used

__all__ = [
    "DEFAULT_MODEL", "GEMMA_MODEL", "NOTICES", "PRESETS",
    "CheckpointError", "KVCache", "ModelConfig", "ModelEncoding", "SamplerSettings",
    "Transformer", "UnencodableTextError", "available_encodings", "encoding_for", "generate", "get_encoding", "load",
    "load_checkpoint",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_checkpoint(name_or_path: str | Path | None = None) -> Checkpoint:
    """The checkpoint for a preset name, a .gguf file, an HF directory, or an HF hub id."""
    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    if name.lower() in PRESETS:
        ckpt = load_gguf_cached(gemma_gguf() if name.lower() == GEMMA_MODEL else default_gguf())
        ckpt.cfg.name = ckpt.tokenizer.name = name.lower()
        return ckpt
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return load_gguf_cached(path)
    if path.is_dir():
        return read_hf_dir(path)
    if path.exists():
        raise CheckpointError(f"{path} is neither a .gguf file nor a model directory")
    if _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return read_hf_dir(fetch_hub(name))
    raise CheckpointError(
        f"no model called {name!r}: give a preset ({', '.join(PRESETS)}), a .gguf file, "
        f"a Hugging Face model directory, or a hub id like HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def load(
    name_or_path: str | Path | None = None, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[Transformer, ModelEncoding]:
    """The model (eval mode, no grad) and its tokenizer; the default model when no name is given."""
    ckpt = load_checkpoint(name_or_path)
    return build_model(ckpt, dtype=dtype, device=device), encoding_for(ckpt.tokenizer)
