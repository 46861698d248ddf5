"""Shared fixtures: a tiny random model for the mechanics, the real default model for the numbers."""

from __future__ import annotations

import pytest
import torch

from model import ModelConfig, Transformer


def tiny_config(**overrides) -> ModelConfig:
    fields = dict(vocab_size=97, d_model=48, n_layers=2, n_heads=6, n_kv_heads=2, d_mlp=96, rope_theta=10000.0, max_seq_len=64, name="tiny")
    fields.update(overrides)
    return ModelConfig(**fields)


def random_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """A model with random weights of realistic scale (and RMSNorm weights away from 1)."""
    torch.manual_seed(seed)
    net = Transformer(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name == "ln_final.weight":
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.2)
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_cfg() -> ModelConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def tiny_net(tiny_cfg) -> Transformer:
    return random_model(tiny_cfg)


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
    from playground.trace import ModelRunner

    return ModelRunner(*real)


@pytest.fixture(scope="session")
def trace(runner):
    return runner.analyze("The cat sat on the mat. The cat sat on the")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(runner):
    """The app on a free loopback port, for the whole test session."""
    from app import create_app, launch_options

    app = create_app(runner)
    port = free_port()
    app.queue(default_concurrency_limit=2).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options()
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)
