"""The HTTP API: each endpoint's numbers equal the model's, and bad input comes back as {"error": ...}."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.sampling import SamplerSettings, distribution
from playground import api
from playground.errors import PromptError
from playground.tab_sampler import CONTROLS

from ..helpers import BAD_PROMPTS, attention_parts_from_hooks, next_token_body, raw_call


@pytest.mark.parametrize("value,kwargs,message", [
    (float("nan"), {}, "must be a number"), (math.inf, {}, "must be a number"), ("1", {}, "must be a number"),
    (True, {}, "must be a number"), (None, {}, "must be a number"), (2.5, dict(whole=True), "must be a whole number"),
    (-1, dict(low=0, high=3, whole=True), "must be in 0..3"), (4, dict(low=0, high=3), "must be in 0..3"),
])
def test_number_refuses_what_is_not_a_valid_number(value, kwargs, message):
    with pytest.raises(PromptError, match=f"^x {message}"):
        api.number(value, "x", **kwargs)


def test_number_accepts_numbers():
    assert api.number(3.0, "x", 0, 3, whole=True) == 3 and isinstance(api.number(3.0, "x", whole=True), int)
    assert api.number(0.25, "x", 0, 1) == 0.25


def test_tokenize(tiny_runner, tiny_enc):
    out = api.tokenize(tiny_runner, "the cat 12", False)
    assert out["ids"] == tiny_enc.encode("the cat 12") and out["n_tokens"] == len(out["ids"])
    assert b"".join(bytes.fromhex(h) for h in out["bytes"]).decode() == "the cat 12"
    chat = api.tokenize(tiny_runner, "hi", True)
    assert chat["ids"] == tiny_enc.apply_chat_template("hi")


def test_attention(tiny_runner, tiny_net, tiny_enc):
    cfg = tiny_runner.cfg
    layer, head = cfg.n_layers - 1, cfg.n_heads - 1
    out = api.attention(tiny_runner, "the cat sat", layer, head, False)
    ids = tiny_enc.encode("the cat sat")
    _, cache = tiny_net.run_with_cache(torch.tensor([ids]), names_filter=f"blocks.{layer}.attn.hook_pattern")
    np.testing.assert_allclose(np.array(out["weights"]), cache[f"blocks.{layer}.attn.hook_pattern"][0, head].numpy(),
                               atol=1e-5)
    assert out["ids"] == ids and out["kv_head"] == cfg.kv_head_of(head) and set(out["head_stats"]) == {
        "first_token", "previous_token", "self", "entropy_bits"}


def test_next_token(tiny_runner, tiny_net, tiny_enc):
    ids = tiny_enc.encode("the cat")
    out = api.next_token(tiny_runner, "the cat", 0.7, 5, 0.9, 0.0, 1.0, 1.0, "hf", False, 200)
    expected = distribution(tiny_net(torch.tensor([ids]))[0, -1], SamplerSettings(temperature=0.7, top_k=5, top_p=0.9),
                            ids)
    assert out["kept"] == int((expected > 0).sum()) <= 5
    assert len(out["ids"]) == out["kept"] and sum(out["probs"]) == pytest.approx(1.0,
                                                                                 abs=1e-5)  # every kept token listed
    np.testing.assert_allclose(out["probs"], expected[out["ids"]].numpy(), atol=1e-6)


@pytest.mark.parametrize("prompt,message", BAD_PROMPTS)
def test_bad_prompts_are_errors_as_data(tiny_runner, prompt, message):
    assert message in api.tokenize(tiny_runner, prompt)["error"]
    assert message in api.attention(tiny_runner, prompt, 0, 0)["error"]
    assert message in api.next_token(tiny_runner, prompt)["error"]


SETTINGS = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repetition_penalty=1.0, order="hf")


@pytest.mark.parametrize("change,message", [
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=math.inf), "temperature"),
    (dict(temperature=-1.0), "temperature"), (dict(temperature="nan"), "temperature"), (dict(top_p=5.0), "top_p"),
    (dict(top_p=0.0), "top_p"), (dict(top_k=-3), "top_k"), (dict(top_k=2.5), "top_k"),
    (dict(top_k=float("nan")), "top_k"),
    (dict(min_p=float("nan")), "min_p"), (dict(order="vllm"), "order"), (dict(n=10_000), "n must be"),
    (dict(n=0), "n must be"),
])
def test_out_of_range_settings_are_errors_as_data(tiny_runner, change, message):
    assert message in api.next_token(tiny_runner, "the cat", **{**SETTINGS, **change})["error"]


@pytest.mark.parametrize("name", [c.name for c in CONTROLS])
@pytest.mark.parametrize("value", [1e9, 1e308, -1e9, float("nan"), "0.5", None, [1]])
def test_every_sampler_setting_is_checked_against_its_sliders_range(tiny_runner, name, value):
    """/next_token takes every setting of the sampler's control table (so a new stage reaches the API) and refuses
    what the tab's slider could not send, naming the setting and its range."""
    control = next(c for c in CONTROLS if c.name == name)
    error = api.next_token(tiny_runner, "the cat", **{name: value})["error"]
    assert error.startswith(f"{name} must be"), error
    if isinstance(value, float) and value == value:
        assert f"in {control.low:g}..{control.high:g}" in error
    low, high = api.next_token(tiny_runner, "the cat", **{name: control.low}), \
        api.next_token(tiny_runner, "the cat", **{name: control.high})
    assert "error" not in low and "error" not in high, (low, high)  # the slider's own ends are served


HOSTILE_PROMPTS = [(["a"], "prompt must be text"), (3, "prompt must be text"), ({"a": 1}, "prompt must be text"),
                   (b"bytes", "prompt must be text")]


@pytest.mark.parametrize("prompt,message", HOSTILE_PROMPTS + BAD_PROMPTS)
def test_every_endpoint_refuses_what_is_not_a_prompt(tiny_runner, prompt, message):
    calls = {
        "tokenize": lambda p: api.tokenize(tiny_runner, p), "attention": lambda p: api.attention(tiny_runner, p, 0, 0),
        "next_token": lambda p: api.next_token(tiny_runner, p), "lens": lambda p: api.lens(tiny_runner, p),
        "attribute": lambda p: api.attribute(tiny_runner, p, " cat", " mat"),
        "routes": lambda p: api.routes(tiny_runner, p), "why_attend": lambda p: api.why_attend(tiny_runner, p, 0, 0),
        "ablate": lambda p: api.ablate(tiny_runner, p, "L0H0"),
        "patch": lambda p: last(api.patch(tiny_runner, p, "the cat", " cat", " mat")),
    }
    for name, call in calls.items():
        assert message in call(prompt)["error"], name


def test_a_prompt_the_tokenizer_cannot_encode_at_all_is_refused_and_a_changed_one_says_so(real):
    from playground.runner import ModelRunner

    net, enc = real
    assert enc.unencodable("\x04")  # a control byte SmolLM2's vocabulary lacks
    runner = ModelRunner(net, enc, background_lens=False)
    assert "no bytes for any character of the prompt (U+0004)" in api.next_token(runner, "\x04")["error"]
    assert "no bytes for any character" in api.tokenize(runner, "\x04 \x04\n")["error"]
    changed = api.next_token(runner, "\x04 The capital of France is")  # the rest is served, and says what changed
    assert "error" not in changed and "U+0004" in changed["notes"][0]


@pytest.mark.parametrize("layer,head", [(float("nan"), 0), (math.inf, 0), (-1, 0), (99, 0), (0, 2.5), (0, 99), ("0",
                                                                                                                0)])
def test_out_of_range_heads_are_errors_as_data(tiny_runner, layer, head):
    assert "must be" in api.attention(tiny_runner, "the cat", layer, head)["error"]


# -- over HTTP, on the real model ------------------------------------------------------------


@pytest.mark.parametrize("endpoint,body,message", [
    ("next_token", next_token_body(temperature="NaN"), "temperature"),
    ("next_token", next_token_body(top_p="Infinity"), "top_p"),
    ("next_token", next_token_body(top_k="1e9"), "top_k must be in"),
    ("next_token", next_token_body(temperature="1e308"), "temperature must"),
    ("next_token", next_token_body(dry_base="1e308"), "dry_base must be in"),
    ("next_token", '[["The capital"]' + next_token_body()[next_token_body().index(","):], "prompt must be text"),
    ("attention", '["Hello", NaN, 0, false]', "layer must be"),
    ("attention", '["Hello", 0, Infinity, false]', "head must be"),
])
def test_nan_and_infinity_over_http(server, endpoint, body, message):
    assert message in raw_call(server, endpoint, '{"data": ' + body + "}")["error"]


def test_the_real_model_through_the_client(client, runner):
    prompt = "Tokens: 12345 and émoji 😀"
    out = client.predict(prompt, False, api_name="/tokenize")
    assert b"".join(bytes.fromhex(h) for h in out["bytes"]).decode() == prompt
    out = client.predict("The capital of France is", 0.7, 40, 0.9, api_name="/next_token")
    assert out["text"][0] == " Paris" and 1 <= out["kept"] <= 40
    out = client.predict("one two three one two three", 6, 2, False, api_name="/attention")
    assert out["kv_head"] == runner.cfg.kv_head_of(2) and np.allclose(np.array(out["weights"]).sum(-1), 1, atol=1e-4)
    assert "Type a prompt" in client.predict("   ", False, api_name="/tokenize")["error"]


# -- the laboratory's endpoints -----------------------------------------------------------------


def test_lens(tiny_runner, tiny_trace, tiny_net, tiny_enc):
    """Against the logit lens computed here from the model's own cache: each row's residual at the position through
    the final norm and the unembedding, its top tokens, and the rank of the final prediction."""
    position = 2
    out = api.lens(tiny_runner, tiny_trace.prompt, position, False, 3)
    ids = tiny_enc.encode(tiny_trace.prompt)
    logits, cache = tiny_net.run_with_cache(torch.tensor([ids]), names_filter=r"hook_embed$|hook_resid_post$")
    L = tiny_net.cfg.n_layers
    rows = [cache["hook_embed"][0, position]] + [cache[f"blocks.{l}.hook_resid_post"][0, position] for l in range(L)]
    row_logits = tiny_net.output(tiny_net.ln_final(torch.stack(rows)))  # (L + 1, V)
    probs = row_logits.softmax(-1)
    final = int(logits[0, position].argmax())
    assert out["rows"] == ["embed"] + [f"L{l}" for l in range(L)] and out["position"] == position
    for r in range(L + 1):
        top = probs[r].topk(3)
        assert [t["p"] for t in out["top"][r]] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert [t["text"] for t in out["top"][r]] == [tiny_enc.decode([int(i)]) for i in top.indices]
        assert out["rank_of_final"][r] == int((row_logits[r] > row_logits[r, final]).sum())
    assert out["rank_of_final"][-1] == 0 and out["token"] == tiny_enc.decode([ids[position]])
    assert "position must be" in api.lens(tiny_runner, "the cat", 99)["error"]


def test_attribute(tiny_runner, tiny_net, tiny_enc):
    out = api.attribute(tiny_runner, "the cat sat", " cat", " mat")
    ids = tiny_enc.encode("the cat sat")
    logits = tiny_net(torch.tensor([ids]))[0, -1]
    assert out["total"] == pytest.approx(float(logits[out["a"]] - logits[out["b"]]), abs=1e-4)
    assert sum(out["parts"]) == pytest.approx(out["total"], abs=1e-4)
    assert "b must be" in api.attribute(tiny_runner, "the cat sat", " cat", "")["error"]


def test_ablate(tiny_runner, tiny_net, tiny_enc):
    """Against the same ablation written out here: heads L1H2 and L0H5 and layer 0's attention output replaced by
    their mean over the prompt's positions."""
    out = api.ablate(tiny_runner, "the cat sat", "L1H2, l0h5", [0], [], "mean", " cat", " mat")
    ids = torch.tensor([tiny_enc.encode("the cat sat")])

    def mean_heads(heads):
        def hook(z, hook):  # (B, T, H, Dh)
            z = z.clone()
            z[:, :, heads] = z[:, :, heads].mean(1, keepdim=True)
            return z
        return hook

    def mean_all(x, hook):  # (B, T, D)
        return x.mean(1, keepdim=True).expand_as(x).clone()

    hooks = [("blocks.0.attn.hook_z", mean_heads([5])), ("blocks.1.attn.hook_z", mean_heads([2])),
             ("blocks.0.hook_attn_out", mean_all)]
    before, after = tiny_net(ids)[0, -1], tiny_net.run_with_hooks(ids, hooks)[0, -1]
    for got, logits in ((out["before"], before), (out["after"], after)):
        top = logits.softmax(-1).topk(10)
        assert [t["id"] for t in got] == top.indices.tolist()
        assert [t["p"] for t in got] == pytest.approx(top.values.tolist(), abs=1e-5)
    a, b = tiny_enc.encode(" cat")[0], tiny_enc.encode(" mat")[0]
    assert out["logit_difference"]["before"] == pytest.approx(float(before[a] - before[b]), abs=1e-4)
    assert out["logit_difference"]["after"] == pytest.approx(float(after[a] - after[b]), abs=1e-4)


@pytest.mark.parametrize("heads,attn,mode,message", [
    ("", [], "zero", "nothing to ablate"),
    ("L1H99", [], "zero", "head must be in"),
    ("layer 1 head 2", [], "zero", "heads must look like"),
    ("", [float("nan")], "zero", "attention_layers must be"),
    ("L0H0", [], "resample", "mode must be"),
])
def test_ablate_bad_input(tiny_runner, heads, attn, mode, message):
    assert message in api.ablate(tiny_runner, "the cat", heads, attn, [], mode)["error"]


def test_patch_streams_each_layer_then_the_numbers_the_runner_gives(tiny_runner, tiny_enc):
    *progress, out = api.patch(tiny_runner, "the cat sat on the", "the mat sat on the", " cat", " mat", "heads")
    L = tiny_runner.cfg.n_layers
    assert progress == [{"progress": f"layer {i} of {L}"} for i in range(1, L)]
    assert np.array(out["values"]).shape == (L, tiny_runner.cfg.n_heads)
    # TransformerLens's head patching, done here with the model's hooks: clean hook_z of one head written into the
    # corrupted run at every position, the logit difference a - b normalised between the corrupted and clean runs
    net = tiny_runner._net
    clean, corrupted = torch.tensor([tiny_enc.encode("the cat sat on the")]), \
        torch.tensor([tiny_enc.encode("the mat sat on the")])
    a, b = tiny_enc.encode(" cat")[0], tiny_enc.encode(" mat")[0]
    clean_logits, clean_cache = net.run_with_cache(clean, names_filter=r"attn\.hook_z$")
    corrupt_logits = net(corrupted)

    def diff(logits) -> float:
        return float(logits[0, -1, a] - logits[0, -1, b])

    assert out["clean_difference"] == pytest.approx(diff(clean_logits), abs=1e-5)
    assert out["corrupted_difference"] == pytest.approx(diff(corrupt_logits), abs=1e-5)
    for layer, head in [(0, 0), (L - 1, tiny_runner.cfg.n_heads - 1), (1, 2)]:
        def write(z, hook, layer=layer, head=head):
            z[:, :, head] = clean_cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
            return z

        patched = diff(net.run_with_hooks(corrupted, [(f"blocks.{layer}.attn.hook_z", write)]))
        expected = (patched - diff(corrupt_logits)) / (diff(clean_logits) - diff(corrupt_logits))
        assert out["values"][layer][head] == pytest.approx(expected, abs=1e-4), (layer, head)
    assert "same token length" in last(api.patch(tiny_runner, "the cat", "the cat sat on", " cat", " mat"))["error"]
    assert "sweep must be" in last(api.patch(tiny_runner, "the cat", "the mat", " cat", " mat", "everything"))["error"]


class Visitor:
    """What Gradio passes as the request: the visitor's session."""

    def __init__(self, session_hash: str) -> None:
        self.session_hash = session_hash


def test_one_patch_at_a_time_per_visitor_and_a_closed_one_frees_its_place(tiny_runner):
    args = ("the cat sat on the", "the mat sat on the", " cat", " mat", "resid")
    first = api.patch(tiny_runner, *args, request=Visitor("A"))
    assert "progress" in next(first)  # A's sweep is under way, between two layers
    (refused,) = list(api.patch(tiny_runner, *args, request=Visitor("A")))
    assert refused["error"].startswith("You already have a patching sweep (/patch) running")
    assert "values" in last(api.patch(tiny_runner, *args, request=Visitor("B")))  # another visitor is served
    first.close()  # what Gradio does when A's client disconnects mid-sweep
    assert tiny_runner.jobs.of("A") is None and not tiny_runner.gate.locked()
    assert "values" in last(api.patch(tiny_runner, *args, request=Visitor("A")))


def last(steps):
    *_, final = steps
    return final


def test_the_mcp_server_offers_the_read_only_tools(server, real):
    """An MCP client (the `mcp` package) lists the tools with their descriptions and calls one."""
    import ast
    import asyncio
    import concurrent.futures

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def talk():
        async with streamablehttp_client(f"{server}gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name: t for t in (await session.list_tools()).tools}
                called = await session.call_tool("tokenize", {"prompt": "Hello world", "chat": False})
                why = await session.call_tool("why_attend", {"prompt": "Hello world, hello", "layer": 3, "head": 1,
                                                             "query": -1, "key": 0, "chat": False})
                return tools, called, why

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own: the test session may have one running
        tools, called, why = pool.submit(asyncio.run, talk()).result(timeout=60)
    assert set(tools) == {"tokenize", "attention", "next_token", "lens", "attribute", "routes", "why_attend"}
    assert "split exactly" in tools["why_attend"].description and "Ferrando" in tools["routes"].description
    answer = ast.literal_eval(why.content[0].text)
    assert abs(sum(map(sum, answer["terms"])) - answer["total"]) < 1e-3
    assert all(tool.description for tool in tools.values())
    assert "prompt" in tools["attribute"].inputSchema["properties"]
    payload = ast.literal_eval(called.content[0].text)  # Gradio's MCP server sends str(output): the dict's repr
    assert payload["ids"] == real[1].encode("Hello world")


def test_routes_are_the_graph_of_the_runners_flow(tiny_runner, tiny_enc):
    """Each attention edge into the last position at the top layer has the importance the paper's rule gives,
    recomputed from the model's hooks; each kept edge is renormalised among those kept at its state."""
    out = api.routes(tiny_runner, "the cat sat on the mat", -1, 0.04)
    ids = tiny_enc.encode("the cat sat on the mat")
    last, top = len(ids) - 1, tiny_runner.cfg.n_layers - 1
    assert out["position"] == last and out["edges"]
    parts = attention_parts_from_hooks(tiny_runner._net, ids, top, last)
    into_top = [e for e in out["edges"] if e["kind"] == "attn" and e["layer"] == top and e["target"] == last]
    assert into_top
    for e in into_top:
        assert e["raw"] == pytest.approx(float(parts[e["head"], e["source"]]), abs=1e-5), e
        assert e["raw"] > 0.04 and e["importance"] >= e["raw"]  # kept above the threshold, then renormalised
    assert {(e["head"], e["source"]) for e in into_top} == {tuple(hs) for hs in np.argwhere(parts > 0.04)}
    assert "threshold must be" in api.routes(tiny_runner, "the cat", -1, float("nan"))["error"]
    assert "position must be in" in api.routes(tiny_runner, "the cat", 5)["error"]


def test_why_attend_sums_to_the_models_score(tiny_runner, tiny_net, tiny_enc):
    ids = tiny_enc.encode("the cat sat on the mat")
    _, cache = tiny_net.run_with_cache(torch.tensor([ids]), names_filter=r"blocks\.1\.attn\.hook_attn_scores$")
    out = api.why_attend(tiny_runner, "the cat sat on the mat", 1, 4, -1, 2)
    score = float(cache["blocks.1.attn.hook_attn_scores"][0, 4, len(ids) - 1, 2])
    assert out["total"] == pytest.approx(score, abs=1e-5)
    assert float(np.sum(out["terms"])) == pytest.approx(score, abs=1e-4)
    assert out["labels"] == ["embed", "L0 attn", "L0 mlp"] and len(out["largest"]) == 5
    assert "key must be at or before" in api.why_attend(tiny_runner, "the cat sat", 1, 0, 1, 2)["error"]
    assert "layer must be in" in api.why_attend(tiny_runner, "the cat sat", 7, 0)["error"]
