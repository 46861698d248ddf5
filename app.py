"""Transformer playground: a Gradio app on a real Llama-style model. `python app.py --help` for flags."""

from __future__ import annotations

import argparse
import sys

import gradio as gr
import torch

from model import CheckpointError, Transformer, load
from model.allocator import keep_freed_memory
from model.tokenizer import ModelEncoding


def create_app(net: Transformer, enc: ModelEncoding) -> gr.Blocks:
    """The app around one loaded model (shared read-only by every visitor)."""

    def next_tokens(prompt: str) -> list[list]:
        if not prompt.strip():
            return []
        ids = enc.encode(prompt, errors="replace")[-512:]
        with torch.no_grad():
            probs = net(torch.tensor([ids]))[0, -1].softmax(-1)
        top = probs.topk(10)
        return [[enc.decode([int(i)]), int(i), round(float(p), 4)] for p, i in zip(top.values, top.indices)]

    with gr.Blocks(title="Transformer playground") as app:
        gr.Markdown(f"# Transformer playground\n{net.cfg.name}: {net.cfg.n_layers} layers, d_model {net.cfg.d_model}")
        prompt = gr.Textbox(label="Prompt", value="The capital of France is")
        table = gr.Dataframe(headers=["token", "id", "probability"], label="Next token")
        prompt.submit(next_tokens, prompt, table, api_name="next_tokens")
        app.load(next_tokens, prompt, table)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="preset name, .gguf file, HF model directory or hub id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true")
    args = parser.parse_args()
    keep_freed_memory()
    try:
        net, enc = load(args.model)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    create_app(net, enc).launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
