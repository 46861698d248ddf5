"""Read checkpoints into our `ModelConfig`, our state-dict names and our RoPE layout.

Two formats: a GGUF file (any quant type the `gguf` package can dequantise) and a Hugging
Face model directory (`config.json`, `*.safetensors`, `tokenizer.json`). One table per
format maps checkpoint names to ours; shapes are checked and the model is filled with
`load_state_dict(strict=True)`.

RoPE layout (see transformer.py): GGUF files of the llama architecture store q/k rows for
interleaved pairs, as we do, so they load as they are. Hugging Face checkpoints store them
half-split; `half_split_to_interleaved` reorders the rows of each head.

Every loader returns a `Checkpoint`: config, state dict (float32 tensors) and a
`TokenizerSpec`, which `model.tokenizer` turns into a tiktoken Encoding.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .layout import lay_out_for_decoding
from .transformer import ModelConfig, Transformer


class CheckpointError(Exception):
    """A checkpoint could not be found, read or understood; the message says why."""


@dataclass
class TokenizerSpec:
    """What a byte-level BPE tokenizer needs, in the checkpoint's own words."""

    tokens: list[str]  # id -> token, in GPT-2's byte-to-unicode alphabet
    merges: list[str]  # "a b" merge rules, highest priority first
    special_tokens: dict[str, int]  # control / added tokens -> id
    pre_tokenizer: str  # "smollm", "gpt2", or a regular expression
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    chat_template: str | None = None
    name: str = ""
    kind: str = "byte_bpe"  # "byte_bpe" (tiktoken's kind: SmolLM2, Llama 3, Qwen) or "sentencepiece" (Gemma's)
    token_types: list[int] | None = None  # GGUF token types (sentencepiece: 3 control, 4 user-defined, 6 byte)
    add_bos: bool = False  # whether a prompt starts with BOS (Gemma's must)


@dataclass
class Checkpoint:
    cfg: ModelConfig
    state_dict: dict[str, Tensor]
    tokenizer: TokenizerSpec
    source: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


def half_split_to_interleaved(w: Tensor, n_heads: int) -> Tensor:
    """Reorder q/k projection rows of each head from pairs (i, i + Dh/2) to pairs (2i, 2i + 1)."""
    out_dim, in_dim = w.shape
    d_head = out_dim // n_heads
    return w.view(n_heads, 2, d_head // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def interleaved_to_half_split(w: Tensor, n_heads: int) -> Tensor:
    """The inverse of `half_split_to_interleaved` (what Hugging Face's Llama converter does)."""
    out_dim, in_dim = w.shape
    d_head = out_dim // n_heads
    return w.view(n_heads, d_head // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


@contextlib.contextmanager
def _no_random_init() -> Iterator[None]:
    """Skip nn.Linear/nn.Embedding's random init, which the checkpoint overwrites anyway.

    On the meta device it costs nothing but one second of PyTorch importing its reference ops.
    """
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
    nn.Linear.reset_parameters = nn.Embedding.reset_parameters = lambda self: None
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved


def build_model(ckpt: Checkpoint, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> Transformer:
    """A Transformer filled with the checkpoint's weights (strict), in eval mode."""
    with torch.device("meta"), _no_random_init():
        net = Transformer(ckpt.cfg)
    expected = net.state_dict()
    state = dict(ckpt.state_dict)
    if ckpt.cfg.tie_embeddings:
        state.pop("output.weight", None)
        expected.pop("output.weight", None)
    for name, tensor in state.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{name}: checkpoint has shape {tuple(tensor.shape)}, "
                                  f"model expects {tuple(expected[name].shape)}")
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        raise CheckpointError(f"weights do not match the model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    state = {name: t.to(device=device, dtype=dtype) for name, t in state.items()}
    net.load_state_dict(state, strict=False, assign=True)  # strictness checked above, tied head aside
    if ckpt.cfg.tie_embeddings:
        net.output.weight = net.tok_embeddings.weight
    net = net.eval().requires_grad_(False)
    # Only Llama's block decodes by `step`, which the layout is for. Gemma's tied 262k-row head would cost 0.9 GB
    # more resident for it (measured: 2.2 vs 1.3 GB; decoding through `forward` 10 vs 7 tokens/s).
    return lay_out_for_decoding(net) if ckpt.cfg.plain_llama else net


# ---------------------------------------------------------------------------------------
# GGUF


GGUF_NAMES = {  # GGUF tensor name -> ours; {} is the layer index
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "ln_final.weight",
    "output.weight": "output.weight",
    "blk.{}.attn_norm.weight": "blocks.{}.ln1.weight",
    "blk.{}.attn_q.weight": "blocks.{}.attn.wq.weight",
    "blk.{}.attn_k.weight": "blocks.{}.attn.wk.weight",
    "blk.{}.attn_v.weight": "blocks.{}.attn.wv.weight",
    "blk.{}.attn_output.weight": "blocks.{}.attn.wo.weight",
    "blk.{}.ffn_norm.weight": "blocks.{}.ln2.weight",
    "blk.{}.ffn_gate.weight": "blocks.{}.mlp.w1.weight",
    "blk.{}.ffn_down.weight": "blocks.{}.mlp.w2.weight",
    "blk.{}.ffn_up.weight": "blocks.{}.mlp.w3.weight",
}

GGUF_NAMES_GEMMA3 = {  # Gemma 3's extra tensors; its ffn_norm is the pre-MLP norm, as Llama's
    **GGUF_NAMES,
    "blk.{}.attn_q_norm.weight": "blocks.{}.attn.q_norm.weight",
    "blk.{}.attn_k_norm.weight": "blocks.{}.attn.k_norm.weight",
    "blk.{}.post_attention_norm.weight": "blocks.{}.ln1_post.weight",
    "blk.{}.post_ffw_norm.weight": "blocks.{}.ln2_post.weight",
}

GGUF_PRE_TOKENIZERS = {"smollm": "smollm", "gpt2": "gpt2", "gpt-2": "gpt2", "default": "gpt2"}

GEMMA3_GLOBAL_EVERY = 6  # Gemma 3: every sixth layer attends globally (transformers' sliding_window_pattern)
GEMMA3_LOCAL_ROPE_BASE = 10000.0  # Gemma 3's sliding layers' RoPE base; the file holds only the global one


def _rename(name: str, table: dict[str, str]) -> str | None:
    """Our name for a checkpoint tensor name, via a table of '{}'-templated names."""
    if name in table:
        return table[name]
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            template = ".".join(parts[:i] + ["{}"] + parts[i + 1 :])
            if template in table:
                return table[template].format(part)
    return None


def _gguf_field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_gguf(path: str | Path, progress: Callable[[int, int, str], None] | None = None) -> Checkpoint:
    """Config, dequantised float32 weights and tokenizer of a llama-architecture GGUF file."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    path = Path(path)
    try:
        reader = GGUFReader(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read GGUF file {path}: {e}") from e
    arch = _gguf_field(reader, "general.architecture")
    if arch not in ("llama", "gemma3"):
        raise CheckpointError(f"{path.name}: architecture {arch!r} is not supported (only 'llama' and 'gemma3')")
    meta = lambda key, default=None: _gguf_field(reader, f"{arch}.{key}", default)  # noqa: E731
    tokens = _gguf_field(reader, "tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    gemma = arch == "gemma3"
    extras = {}
    if gemma:  # what the file does not say is Gemma 3's published configuration, as transformers fills it in
        n_layers, d_model = int(meta("block_count")), int(meta("embedding_length"))
        extras = dict(
            head_dim=int(meta("attention.key_length")), qk_norm=True, post_norms=True, mlp_act="gelu_tanh",
            embed_scale=d_model ** 0.5, query_pre_attn_scalar=float(meta("attention.key_length")),
            sliding_window=int(meta("attention.sliding_window")), rope_local_base=GEMMA3_LOCAL_ROPE_BASE,
            layer_types=tuple("full" if (i + 1) % GEMMA3_GLOBAL_EVERY == 0 else "sliding" for i in range(n_layers)))
    cfg = ModelConfig(
        **extras,
        vocab_size=int(meta("vocab_size", len(tokens))),
        d_model=int(meta("embedding_length")),
        n_layers=int(meta("block_count")),
        n_heads=int(meta("attention.head_count")),
        n_kv_heads=int(meta("attention.head_count_kv", meta("attention.head_count"))),
        d_mlp=int(meta("feed_forward_length")),
        rope_base=float(meta("rope.freq_base", 10000.0)),
        norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        max_seq_len=int(meta("context_length", 2048)),
        tie_embeddings="output.weight" not in names,
        name=str(_gguf_field(reader, "general.name", path.stem)),
    )
    if meta("rope.dimension_count", cfg.d_head) != cfg.d_head:
        raise CheckpointError(f"{path.name}: partial rotary embeddings are not supported")
    check_fits(cfg)  # before a tensor is dequantised

    state: dict[str, Tensor] = {}
    for i, t in enumerate(reader.tensors):
        ours = _rename(t.name, GGUF_NAMES_GEMMA3 if gemma else GGUF_NAMES)
        if ours is None:
            continue  # e.g. rope_freqs: we compute the frequencies ourselves
        try:
            array = dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            message = f"{t.name}: quant type {t.tensor_type.name} cannot be dequantised by gguf: {e}"
            raise CheckpointError(message) from e
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dims innermost first
        # np.array copies: GGUF data is a read-only memmap
        tensor = torch.from_numpy(np.array(array, dtype=np.float32).reshape(shape))
        if gemma:  # llama.cpp stores Gemma's q/k rows half-split (it turns them NeoX-style): ours are interleaved
            tensor = _half_split_rows(ours, tensor, cfg)
        state[ours] = tensor
        if progress:
            progress(i + 1, len(reader.tensors), t.name)

    token_types = _gguf_field(reader, "tokenizer.ggml.token_type")
    model_kind = _gguf_field(reader, "tokenizer.ggml.model")
    if gemma:
        if model_kind != "llama":
            raise CheckpointError(f"{path.name}: tokenizer model {model_kind!r} is not SentencePiece BPE")
        spec = TokenizerSpec(
            tokens=list(tokens), merges=[], pre_tokenizer="none", kind="sentencepiece",
            special_tokens={tok: i for i, (tok, kind) in enumerate(zip(tokens, token_types)) if kind == 3},
            token_types=[int(k) for k in token_types],
            add_bos=bool(_gguf_field(reader, "tokenizer.ggml.add_bos_token", True)),
            bos_token_id=_gguf_field(reader, "tokenizer.ggml.bos_token_id"),
            eos_token_id=_gguf_field(reader, "tokenizer.ggml.eos_token_id"),
            chat_template=_gguf_field(reader, "tokenizer.chat_template"), name=cfg.name)
        return Checkpoint(cfg, state, spec, source=str(path))
    pre = str(_gguf_field(reader, "tokenizer.ggml.pre", "default"))
    if pre not in GGUF_PRE_TOKENIZERS:
        raise CheckpointError(f"{path.name}: pre-tokenizer {pre!r} is not supported")
    if model_kind != "gpt2":
        raise CheckpointError(f"{path.name}: tokenizer model {model_kind!r} is not byte-level BPE")
    spec = TokenizerSpec(
        tokens=list(tokens),
        merges=list(_gguf_field(reader, "tokenizer.ggml.merges")),
        # token types 3 and 4: control and user-defined tokens
        special_tokens={tok: i for i, (tok, kind) in enumerate(zip(tokens, token_types)) if kind in (3, 4)},
        pre_tokenizer=GGUF_PRE_TOKENIZERS[pre],
        bos_token_id=_gguf_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_gguf_field(reader, "tokenizer.ggml.eos_token_id"),
        chat_template=_gguf_field(reader, "tokenizer.chat_template"),
        name=cfg.name,
    )
    return Checkpoint(cfg, state, spec, source=str(path))


def _half_split_rows(name: str, tensor: Tensor, cfg: ModelConfig) -> Tensor:
    """A q/k projection (or q/k norm gain) from the half-split layout into ours; any other tensor as it is."""
    if name.endswith("attn.wq.weight"):
        return half_split_to_interleaved(tensor, cfg.n_heads)
    if name.endswith("attn.wk.weight"):
        return half_split_to_interleaved(tensor, cfg.n_kv_heads)
    if name.endswith(("attn.q_norm.weight", "attn.k_norm.weight")):  # one head's gain, reordered the same way
        return half_split_to_interleaved(tensor[:, None], 1).reshape(-1)
    return tensor


# ---------------------------------------------------------------------------------------
# Hugging Face directory


HF_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "ln_final.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{}.input_layernorm.weight": "blocks.{}.ln1.weight",
    "model.layers.{}.self_attn.q_proj.weight": "blocks.{}.attn.wq.weight",
    "model.layers.{}.self_attn.k_proj.weight": "blocks.{}.attn.wk.weight",
    "model.layers.{}.self_attn.v_proj.weight": "blocks.{}.attn.wv.weight",
    "model.layers.{}.self_attn.o_proj.weight": "blocks.{}.attn.wo.weight",
    "model.layers.{}.self_attn.q_proj.bias": "blocks.{}.attn.wq.bias",  # Qwen2
    "model.layers.{}.self_attn.k_proj.bias": "blocks.{}.attn.wk.bias",
    "model.layers.{}.self_attn.v_proj.bias": "blocks.{}.attn.wv.bias",
    "model.layers.{}.self_attn.q_norm.weight": "blocks.{}.attn.q_norm.weight",  # Qwen3
    "model.layers.{}.self_attn.k_norm.weight": "blocks.{}.attn.k_norm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "blocks.{}.ln2.weight",
    "model.layers.{}.mlp.gate_proj.weight": "blocks.{}.mlp.w1.weight",
    "model.layers.{}.mlp.down_proj.weight": "blocks.{}.mlp.w2.weight",
    "model.layers.{}.mlp.up_proj.weight": "blocks.{}.mlp.w3.weight",
}


HF_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "smollm3")  # model_type values read, each a few fields


def _hf_config(cfg: dict) -> ModelConfig:
    family = cfg.get("model_type")
    if family not in HF_FAMILIES:
        raise CheckpointError(f"model_type {family!r} is not supported (supported: {', '.join(HF_FAMILIES)})")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if kind == "llama3":
        scaling = (float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"]),
                   int(rope["original_max_position_embeddings"]))
    elif kind not in ("default", None):
        raise CheckpointError(f"RoPE scaling {kind!r} is not supported (supported: default, llama3)")
    for unmodelled in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.get(unmodelled):
            raise CheckpointError(f"{unmodelled} is not modelled here")
    window = cfg.get("sliding_window") if family == "mistral" or cfg.get("use_sliding_window") else None
    if family in ("qwen2", "qwen3") and cfg.get("use_sliding_window") and cfg.get("max_window_layers") is not None:
        raise CheckpointError("sliding-window attention on some Qwen layers only is not modelled here")
    rope_layers = tuple(bool(x) for x in cfg["no_rope_layers"]) if family == "smollm3" and cfg.get(
        "no_rope_layers") else None  # SmolLM3: 1 = this layer uses RoPE (transformers' use_rope)
    return ModelConfig(
        head_dim=cfg.get("head_dim") if family == "qwen3" or cfg.get("head_dim") not in (
            None, cfg["hidden_size"] // cfg["num_attention_heads"]) else None,
        qkv_bias=family == "qwen2" or bool(cfg.get("attention_bias", False)),
        qk_norm=family == "qwen3",
        sliding_window=int(window) if window else None,
        rope_scaling=scaling,
        rope_layers=rope_layers,
        vocab_size=cfg["vocab_size"],
        d_model=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"],
        n_heads=cfg["num_attention_heads"],
        n_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        d_mlp=cfg["intermediate_size"],
        rope_base=float(cfg.get("rope_theta", rope.get("rope_theta", 10000.0))),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        name=cfg.get("_name_or_path", "") or "hf-model",
    )


def _hf_pre_tokenizer(pre: dict | None) -> str:
    """Our name (or regex) for a tokenizer.json pre_tokenizer we know how to reproduce."""
    if pre is None:
        raise CheckpointError("tokenizer.json has no pre_tokenizer")
    kind = pre.get("type")
    if kind == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False):
        return "gpt2"
    if kind == "Sequence":
        parts = pre["pretokenizers"]
        kinds = [p.get("type") for p in parts]
        if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
            return "smollm"
        if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
            return parts[0]["pattern"]["Regex"]  # e.g. Llama 3: the split pattern is the whole story
    raise CheckpointError(f"unsupported pre_tokenizer in tokenizer.json: {json.dumps(pre)[:200]}")


def read_hf_tokenizer(directory: Path) -> TokenizerSpec:
    tok = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    model = tok["model"]
    if model.get("type") != "BPE":
        raise CheckpointError(f"tokenizer model {model.get('type')!r} is not BPE")
    vocab: dict[str, int] = model["vocab"]
    special = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    size = max([*vocab.values(), *special.values()]) + 1
    tokens = [""] * size
    for text, i in {**vocab, **special}.items():
        tokens[i] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    config_path = directory / "tokenizer_config.json"
    tok_cfg = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    template = tok_cfg.get("chat_template")
    if template is None and (directory / "chat_template.jinja").exists():
        template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    token_id = lambda key: special.get(tok_cfg[key]) if isinstance(tok_cfg.get(key), str) else None  # noqa: E731
    return TokenizerSpec(
        tokens=tokens,
        merges=merges,
        special_tokens=special,
        pre_tokenizer=_hf_pre_tokenizer(tok.get("pre_tokenizer")),
        bos_token_id=token_id("bos_token"),
        eos_token_id=token_id("eos_token"),
        chat_template=template,
        name=directory.name,
    )


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux's MemAvailable), None where it cannot say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(cfg: ModelConfig, available: int | None = None) -> None:
    """Refuse, with the arithmetic, a model this machine cannot hold: the loader reads the weights into float32
    and then builds the model from them, so about 2 x 4 bytes a parameter at the peak."""
    from .arithmetic import parameter_counts

    available = available_memory() if available is None else available
    params = sum(parameter_counts(cfg).values())
    needed = 2 * 4 * params
    if available is not None and needed > available:
        raise CheckpointError(f"{cfg.name}: {params / 1e9:.1f} B parameters need about {needed / 2**30:.1f} GB to load "
                              f"(read into float32, then built: 2 x 4 bytes a parameter); this machine has "
                              f"{available / 2**30:.1f} GB available.")


def read_hf_dir(directory: str | Path) -> Checkpoint:
    """Config, weights (RoPE rows permuted into our layout) and tokenizer of an HF Llama directory."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise CheckpointError(f"{directory} has no config.json")
    cfg = _hf_config(json.loads((directory / "config.json").read_text(encoding="utf-8")))
    check_fits(cfg)  # before a byte of the weights is read
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory} has no *.safetensors weights")
    state: dict[str, Tensor] = {}
    for f in files:
        for name, tensor in load_file(f).items():
            ours = _rename(name, HF_NAMES)
            if ours is None:
                continue  # e.g. rotary_emb.inv_freq in old checkpoints
            tensor = tensor.float()
            if ours.endswith(("attn.wq.weight", "attn.wq.bias")):
                tensor = half_split_to_interleaved(tensor[..., None] if tensor.ndim == 1 else tensor, cfg.n_heads)
            elif ours.endswith(("attn.wk.weight", "attn.wk.bias")):
                tensor = half_split_to_interleaved(tensor[..., None] if tensor.ndim == 1 else tensor, cfg.n_kv_heads)
            elif ours.endswith(("attn.q_norm.weight", "attn.k_norm.weight")):  # one head's gain, same reordering
                tensor = half_split_to_interleaved(tensor[:, None], 1)
            if ours.endswith("bias") or ours.endswith("norm.weight"):
                tensor = tensor.reshape(-1)
            state[ours] = tensor
    if "output.weight" not in state:
        cfg.tie_embeddings = True
    return Checkpoint(cfg, state, read_hf_tokenizer(directory), source=str(directory))


def fetch_hub(repo_id: str) -> Path:
    """Download an HF hub repository's model files (needs network and `huggingface_hub`)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise CheckpointError(f"{repo_id!r} looks like a hub id, but huggingface_hub is not installed") from e
    try:
        return Path(
            snapshot_download(
                repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja"], ignore_patterns=["onnx/*", "runs/*"]
            )
        )
    except Exception as e:  # network errors, missing repo, gated repo: one message for the user
        raise CheckpointError(f"could not download {repo_id!r} from the Hugging Face Hub: {e}") from e
