"""Every view on Gemma 3 270M, and what each shows that differs from SmolLM2: the window and the global layers, two
RoPE bases, GELU and the post-MLP norm, BOS, the parameter count, no chat template. Numbers against transformers'
model on the same GGUF or the model's own hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground import tab_arithmetic, views
from playground.errors import PromptError
from playground.runner import ModelRunner

PROMPT = "The Eiffel Tower is in the city of"
STATE = {("routes", "why"): dict(layer=5, head=2), ("intervene", "ablation"): dict(heads=["L5H1"]),
         ("intervene", "patching"): dict(clean=PROMPT, corrupted="The Colosseum is in the city of", a=" Paris",
                                         b=" Rome", kind="resid")}


@pytest.fixture(scope="module")
def runner(gemma):
    net, enc = gemma
    return ModelRunner(net, enc, background_lens=False)


@pytest.fixture(scope="module")
def trace(runner):
    return runner.analyze(PROMPT)


@pytest.mark.parametrize("tab,name", [(tab, name) for tab, module in views.BY_TAB.items() for name in module.VIEWS])
def test_every_view_draws_on_gemma(runner, trace, tab, name):
    fn = views.view(tab, name)
    state = STATE.get((tab, name), {})
    shown = fn(runner, **state) if name == "patching" else fn(runner, trace, **state)
    assert shown.figure is not None and shown.note


def test_a_prompt_starts_with_bos_and_the_tokenization_note_says_so(runner, trace, hf_gemma_tokenizer):
    assert trace.ids.tolist() == hf_gemma_tokenizer(PROMPT)["input_ids"]
    shown = views.view("tokenization", "table")(runner, trace)
    assert shown.facts["tokens"] == 9 and shown.facts["words"] == len(PROMPT.split()) == 8
    assert "<bos>" in shown.note and "puts before every prompt" in shown.note


def test_the_chat_switch_is_refused_on_a_base_model(runner):
    assert not runner.has_chat_template
    with pytest.raises(PromptError, match="gemma3-270m is a base model: it has no chat template"):
        runner.tokenize("Hello", chat=True)


def test_byte_fallback_is_noted_and_encodes(runner):
    ids, _, notes = runner.tokenize("A new emoji \U0001fae8 here", chat=False)
    assert any("byte fallback" in n and "U+1FAE8" in n for n in notes)
    assert runner.decode(ids[1:]) == "A new emoji \U0001fae8 here"


def test_the_attention_view_says_which_layers_see_every_key(runner, trace):
    pattern = views.view("attention", "pattern")
    local, full = pattern(runner, trace, layer=0), pattern(runner, trace, layer=11)
    assert local.facts["window"] == 512 and full.facts["window"] is None
    assert "sliding-window" in local.note and "5, 11, 17" in local.note and "512" in local.note
    assert "**global** layer" in full.note


def test_the_window_hides_keys_past_512_in_the_pattern_drawn(gemma, hf_gemma):
    """With a longer cap, a 600-token prompt: layer 0's pattern shows nothing from keys more than 511 back (as
    transformers' model attends), layer 5's shows them."""
    net, enc = gemma
    runner = ModelRunner(net, enc, max_tokens=600, background_lens=False)
    text = "The cat sat on the mat, and the dog lay by the door. " * 39
    trace = runner.analyze(text, lens=False)
    T = trace.n_tokens
    assert T > 512
    with torch.no_grad():
        ref = hf_gemma(torch.tensor([trace.ids.tolist()]), output_attentions=True)
    for layer, window in ((0, 512), (5, None)):
        shown = views.view("attention", "pattern")(runner, trace, layer=layer, head=1)
        drawn = runner.layer(trace, layer).pattern[1]  # what the heatmap draws
        np.testing.assert_allclose(drawn, ref.attentions[layer][0, 1].numpy(), atol=1e-4)
        hidden = drawn[T - 1, : T - 512]
        assert (hidden == 0).all() if window else (hidden > 0).all()
        assert shown.facts["window"] == window


def test_rope_uses_each_layers_base_as_transformers_does(runner, trace, hf_gemma):
    rotary = hf_gemma.model.rotary_emb
    pairs = views.view("rope", "pairs")
    for layer, kind in ((0, "sliding_attention"), (5, "full_attention")):
        shown = pairs(runner, trace, layer=layer)
        theirs = getattr(rotary, f"{kind}_inv_freq").double()
        pos = shown.facts["pos"]
        assert shown.facts["base"] == hf_gemma.config.rope_parameters[kind]["rope_theta"]
        assert shown.facts["slowest_deg"] == pytest.approx(float(np.degrees(pos * theirs[-1])), rel=1e-5)
        assert f"RoPE base is **{shown.facts['base']:,.0f}**" in shown.note


def test_the_neurons_view_writes_through_the_post_mlp_norm(gemma, runner, trace):
    """The largest neuron's write, as shown, is its part of hook_mlp_out: post x its column of w2, through ln2_post
    with the scale the model used (its hook_scale)."""
    net, _ = gemma
    layer, pos = 9, trace.n_tokens - 1
    shown = views.view("block", "neurons")(runner, trace, layer=layer, pos=pos)
    _, cache = net.run_with_cache(torch.tensor([trace.ids.tolist()]),
                                  names_filter=rf"blocks\.{layer}\.(mlp\.hook_post|ln2_post\.hook_scale|hook_mlp_out)$")
    block = net.blocks[layer]
    post = cache[f"blocks.{layer}.mlp.hook_post"][0, pos]
    scale = cache[f"blocks.{layer}.ln2_post.hook_scale"][0, pos]
    parts = (block.mlp.w2.weight * post) * block.ln2_post.weight[:, None] / scale  # (D, F): each neuron's write
    torch.testing.assert_close(parts.sum(1), cache[f"blocks.{layer}.hook_mlp_out"][0, pos], atol=2e-3, rtol=1e-4)
    top = shown.facts["neuron"]
    assert shown.facts["writes"] == pytest.approx(float(parts[:, top].norm()), rel=1e-4)
    assert int(parts.norm(dim=0).argmax()) == top
    assert "GELU(w1·x)" in shown.note and "ln2_post" in shown.note


def test_arithmetic_counts_gemmas_parameters_as_transformers_does(runner, hf_gemma):
    from model.arithmetic import parameter_counts

    counts = parameter_counts(runner.cfg)
    assert sum(counts.values()) == runner.parameter_count == hf_gemma.num_parameters()
    assert counts["embedding"] / sum(counts.values()) > 0.6  # the 262k x 640 embedding is most of them


def test_arithmetic_crossovers_count_the_window(runner):
    """Brute force over S: attention's FLOPs with the window (sliding layers see at most 512 keys) against the
    MLPs'. A linear extrapolation from S = 1 would say 1,120."""
    cfg = runner.cfg
    mlp = 2 * cfg.n_layers * 3 * cfg.d_model * cfg.d_mlp
    D, Dh = cfg.d_model, cfg.d_head
    proj = 2 * cfg.n_layers * (2 * D * cfg.n_heads * Dh + 2 * D * cfg.n_kv_heads * Dh)  # q and o, k and v
    global_layers = sum(t == "full" for t in cfg.layer_types)
    keys = lambda S: (cfg.n_layers - global_layers) * min(S, 512) + global_layers * S  # noqa: E731
    first = next(S for S in range(1, cfg.max_seq_len + 1) if proj + 4 * keys(S) * cfg.n_heads * cfg.d_head >= mlp)
    assert tab_arithmetic.crossovers(cfg)["with its projections"] == first > 1120


def test_the_model_line_names_both_bases_and_the_window(runner):
    from playground.server import rope_and_window

    line = rope_and_window(runner.cfg)
    assert line == ("RoPE base 10,000 on sliding-window layers, 1,000,000 on global ones · sliding window 512 on 15 of "
                    "18 layers")


def test_choosing_gemma_puts_its_notice_on_the_model_line():
    from model.selection import choose_model

    _, _, note = choose_model("gemma3-270m")
    assert "Gemma Terms of Use found at ai.google.dev/gemma/terms" in note and "Prohibited Use Policy" in note


def test_routes_and_attribution_say_they_freeze_the_post_attention_norm(runner, trace):
    shown = views.view("routes", "graph")(runner, trace)
    assert "ln1_post" in shown.note and "scale frozen" in shown.note


def test_a_prompt_past_the_cap_is_refused_with_the_count(runner):
    with pytest.raises(PromptError, match=r"That prompt is \d[\d,]* tokens; the limit is 512"):
        runner.tokenize("word " * 600, chat=False)


def test_a_second_model_that_does_not_fit_is_refused_with_the_arithmetic(runner):
    from model import CheckpointError
    from model.loaders import check_fits

    with pytest.raises(CheckpointError, match=r"gemma3-270m: 0\.3 B parameters need about 2\.0 GB to load .* this "
                                              r"machine has 0\.5 GB available"):
        check_fits(runner.cfg, available=2**29)


def test_compare_offers_two_models_only_when_a_second_is_loaded(runner, tiny_runner):
    import gradio as gr

    from playground import tab_compare
    from playground.ui import TabContext

    for second, offered in ((None, [tab_compare.PROMPTS]), (runner, [tab_compare.PROMPTS, tab_compare.MODELS])):
        with gr.Blocks() as blocks:
            tab_compare.build(TabContext(runner=tiny_runner, trace=gr.State(None), large=gr.Checkbox(False),
                                         active=gr.State("compare"), second=second))
        (mode,) = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "cmp-mode"]
        assert [c[0] for c in mode.choices] == offered


def test_the_kv_note_says_what_a_windowed_cache_needs(runner, trace):
    """15 sliding layers keep 512 positions, 3 global ones all 32,768: keys and values, one head of 256, float32."""
    shown = views.view("arithmetic", "kv_cache")(runner, trace)
    windowed = (15 * 512 + 3 * 32768) * 2 * 1 * 256 * 4
    assert f"needs {windowed / 2**20:.0f} MiB for the full context" in shown.note
    assert "on the 15 sliding-window layers" in shown.note
