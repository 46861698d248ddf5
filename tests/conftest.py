"""Shared fixtures: a tiny random model and tokenizer for the mechanics, the real default model for the numbers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from model import ModelConfig, ModelEncoding, Transformer

from .helpers import random_model, tiny_config, tiny_spec

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TINY_PROMPT = "the cat sat on the mat. the cat sat on the"
REAL_PROMPT = "The cat sat on the mat. The cat sat on the"


# -- the end of the run ------------------------------------------------------------------------

_EXIT_STATUS = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """After everything pytest reports has been printed, exit with its status without the interpreter's teardown:
    PyTorch's C++ static destructors, run in an unsafe order at teardown, now and then abort a process whose tests
    all passed ("terminate called without an active exception", exit 134; seen here about once in seven runs of
    one browser test; NVIDIA-NeMo/Megatron-Bridge#2818 is the same). The status is pytest's own."""
    if "status" in _EXIT_STATUS and os.environ.get("PLAYGROUND_TEST_TEARDOWN") != "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["status"])


# -- the tiny model: seconds, not minutes ----------------------------------------------------


@pytest.fixture(scope="session")
def tiny_cfg() -> ModelConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def tiny_net(tiny_cfg) -> Transformer:
    return random_model(tiny_cfg)


@pytest.fixture(scope="session")
def tiny_enc() -> ModelEncoding:
    return ModelEncoding(tiny_spec())


@pytest.fixture(scope="session")
def tiny_runner(tiny_net, tiny_enc):
    from playground.runner import ModelRunner

    return ModelRunner(tiny_net, tiny_enc)


@pytest.fixture(scope="session")
def tiny_trace(tiny_runner):
    return tiny_runner.analyze(TINY_PROMPT)


# -- the real model: where the real numbers matter -------------------------------------------


@pytest.fixture(scope="session")
def real():
    """(net, enc) of the default model; fetched and converted on first use."""
    from model import load

    return load()


@pytest.fixture(scope="session")
def gguf_path():
    from model.weights import default_gguf

    return default_gguf()


@pytest.fixture(scope="session")
def hf_model(gguf_path):
    """Hugging Face transformers' Llama on the same GGUF, eager attention, float32."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, attn_implementation="eager", dtype=torch.float32
    ).eval()


@pytest.fixture(scope="session")
def runner(real):
    from playground.runner import ModelRunner

    return ModelRunner(*real)


@pytest.fixture(scope="session")
def trace(runner):
    return runner.analyze(REAL_PROMPT)


# -- the running app --------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app, runner):
    """The app served on a free port for the module's tests: its address, then closed."""
    from app import launch_options, queued

    port = free_port()
    queued(app, runner=runner).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                      quiet=True, **launch_options())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="session")
def server(runner):
    """The app on a free loopback port, for the whole test session."""
    from app import create_app, launch_options, queued

    app = create_app(runner)
    port = free_port()
    queued(app).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       **launch_options())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through Playwright; skipped without them, a failure where CI requires them."""
    required = os.environ.get("PLAYGROUND_REQUIRE_BROWSER") == "1"
    if not Path(CHROMIUM).exists():
        if required:
            pytest.fail(f"Chromium not found at {CHROMIUM} but PLAYGROUND_REQUIRE_BROWSER=1")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            pytest.fail("playwright is not installed but PLAYGROUND_REQUIRE_BROWSER=1")
        pytest.skip("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield b
        b.close()


# -- the second real model: Gemma 3 270M ---------------------------------------------------------


@pytest.fixture(scope="session")
def gemma_path():
    from model.weights import gemma_gguf

    return gemma_gguf()


@pytest.fixture(scope="session")
def gemma():
    """(net, enc) of Gemma 3 270M; fetched, assembled and converted on first use."""
    from model import load

    return load("gemma3-270m")


@pytest.fixture(scope="session")
def hf_gemma(gemma_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(gemma_path.parent), gguf_file=gemma_path.name,
                                                attn_implementation="eager", dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def hf_gemma_tokenizer(gemma_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gemma_path.parent), gguf_file=gemma_path.name)
