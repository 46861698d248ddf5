"""The model's work on a GPU: Analyze, decoding, the logit lens and routes, for the default model and a model of
Llama-3.2-1B's shape (random weights: the timing is the same), where a GPU is at hand.

    python bench/bench_gpu.py                      # on the GPU; says so and stops where there is none
    python bench/bench_gpu.py --dtype bfloat16
    python bench/bench_gpu.py --device cpu --quick # the same script on the CPU, short (to check it runs)

Prints, per model: Analyze (every hook cached, `run_with_cache`) at 512 and 2,048 tokens, and the same with the
cache copied to host memory as the app's traces are kept; greedy decode tokens/s, with the fraction of the
device's memory-bandwidth limit (a streaming read of the weights' bytes, measured in the same run); the logit
lens over every layer and position at 512 tokens; the routes' importances (every layer) at 128 tokens. Each
figure is the median of a few runs after a warm-up, with the device synchronised around it. Run by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import generate, load  # noqa: E402
from model.lens import lens_logits  # noqa: E402
from model.routes import flow  # noqa: E402
from model.transformer import ModelConfig, Transformer  # noqa: E402
from timing import median  # noqa: E402 (bench/timing.py)

LLAMA_32_1B = ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_mlp=8192,
                          rope_base=500000.0, norm_eps=1e-5, max_seq_len=131072, tie_embeddings=True,
                          rope_scaling=(32.0, 1.0, 4.0, 8192), name="llama-3.2-1b-shape (random weights)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs after one warm-up (bench/timing.py), each waiting for the
    device to finish."""
    return median(lambda: (fn(), sync(device)), repeats)


def random_model(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> Transformer:
    """A model of this shape with random weights made on the device (no host copy of them)."""
    with torch.device("meta"):
        net = Transformer(cfg)
    net = net.to_empty(device=device).to(dtype)
    if cfg.tie_embeddings:
        net.output.weight = net.tok_embeddings.weight
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("norm.weight") or name.endswith(("ln1.weight", "ln2.weight", "ln_final.weight")):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02, generator=generator)
    return net.eval().requires_grad_(False)


def streaming_limit(nbytes: int, device: torch.device, dtype: torch.dtype) -> float:
    """Tokens/s if a token cost one streaming read of nbytes on the device."""
    buffer = torch.ones(nbytes // torch.empty((), dtype=dtype).element_size(), dtype=dtype, device=device)
    return 1 / timed(buffer.sum, device, 5)


@torch.inference_mode()
def bench(net: Transformer, device: torch.device, lengths: tuple[int, int], lens_tokens: int, routes_tokens: int,
          decode_tokens: int, repeats: int) -> None:
    cfg = net.cfg
    weights = net.tok_embeddings.weight
    nbytes = sum(p.numel() * p.element_size() for p in net.parameters())
    print(f"\n{cfg.name}: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads}/{cfg.n_kv_heads} heads, "
          f"vocabulary {cfg.vocab_size}; {nbytes / 1e9:.2f} GB of weights in {weights.dtype} on {device}")
    ids = torch.randint(0, cfg.vocab_size, (1, max(lengths)), generator=torch.Generator().manual_seed(1))
    for T in lengths:
        tokens = ids[:, :T].to(device)
        on_device = timed(lambda: net.run_with_cache(tokens), device, repeats)
        to_host = timed(lambda: {k: v.cpu() for k, v in net.run_with_cache(tokens)[1].items()}, device, repeats)
        print(f"  Analyze {T:5d} tokens: {on_device * 1000:8.1f} ms (cache on the device)   "
              f"{to_host * 1000:8.1f} ms (cache copied to host memory, as a trace is kept)")
    prompt = ids[0, :32].tolist()
    seconds = timed(lambda: list(generate(net, prompt, decode_tokens)), device, max(1, repeats // 2))
    speed = decode_tokens / seconds  # the prompt's forward included
    limit = streaming_limit(nbytes, device, weights.dtype)
    print(f"  greedy decode, {decode_tokens} tokens: {speed:7.1f} tokens/s   {speed / limit:5.0%} of the limit "
          f"({limit:.0f} tokens/s from a streaming read of {nbytes / 1e9:.2f} GB)")
    names = [f"blocks.{l}.hook_resid_pre" for l in range(cfg.n_layers)] + [f"blocks.{cfg.n_layers - 1}.hook_resid_post"]

    def residual(T: int) -> torch.Tensor:
        _, cache = net.run_with_cache(ids[:, :T].to(device), names_filter=names)
        return torch.stack([cache[name][0] for name in names]).float()  # (L + 1, T, D)

    resid = residual(lens_tokens)
    seconds = timed(lambda: lens_logits(net, resid).argmax(-1), device, repeats)
    print(f"  logit lens, {cfg.n_layers + 1} rows x {lens_tokens} positions x {cfg.vocab_size} logits: "
          f"{seconds * 1000:8.1f} ms")
    resid = residual(routes_tokens)
    seconds = timed(lambda: flow(net, resid), device, max(1, repeats // 2))
    print(f"  routes, every importance at {routes_tokens} tokens: {seconds * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--quick", action="store_true", help="short lengths and the default model only")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no GPU here (torch.cuda.is_available() is False): nothing to measure. "
              "`--device cpu --quick` runs the same script on the CPU.")
        return
    dtype = getattr(torch, args.dtype)
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    lengths, lens_tokens, routes_tokens, decode_tokens, repeats = ((512, 2048), 512, 128, 64, 5)
    if args.quick:
        lengths, lens_tokens, routes_tokens, decode_tokens, repeats = ((32, 64), 32, 32, 8, 1)
    net, _ = load(dtype=dtype, device=device)
    bench(net, device, lengths, lens_tokens, routes_tokens, decode_tokens, repeats)
    del net
    if not args.quick:
        bench(random_model(LLAMA_32_1B, device, dtype), device, lengths, lens_tokens, routes_tokens, decode_tokens,
              repeats)


if __name__ == "__main__":
    main()
