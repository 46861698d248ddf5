"""bench/device_parity.py, the check that every model-using view gives the CPU's numbers on another device or
dtype, run here on the CPU: it finds nothing on a copy of the model, finds a changed weight, flags a tensor left
outside host memory, and every view runs in bfloat16."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from playground.runner import ModelRunner

spec = importlib.util.spec_from_file_location("device_parity", Path(__file__).parents[2] / "bench" / "device_parity.py")
parity = importlib.util.module_from_spec(spec)
sys.modules["device_parity"] = parity  # its dataclasses look their module up
spec.loader.exec_module(parity)

PROMPT, CORRUPTED = "the cat sat on the mat and the cat", "the cat sat on the mat and the mat"
VIEWS = {"analyze", "layer 0", "logit lens (after each block and each attention)", "inside a block", "lens logits",
         "next logits", "activations (every hook)", "generation steps with attention", "greedy", "beam search",
         "sampled", "speculative", "DoLa", "contrastive search", "token log-probs", "ablate two heads (zero)",
         "ablate an attention block (mean)", "layer sweep", "attribution", "patching, residual stream",
         "patching, each head", "routes", "why a head attends (score split)", "a head's logits", "embeddings"}


def runner(net, enc) -> ModelRunner:
    return ModelRunner(net, enc, background_lens=False)


@pytest.fixture(scope="module")
def reference(tiny_net, tiny_enc):
    assert len(tiny_enc.encode(PROMPT)) == len(tiny_enc.encode(CORRUPTED))
    return runner(tiny_net, tiny_enc)


def test_a_copy_of_the_model_agrees_on_every_view(reference, tiny_net, tiny_enc):
    report = parity.compare(reference, runner(copy.deepcopy(tiny_net), tiny_enc), torch.float32, PROMPT, CORRUPTED)
    assert VIEWS <= set(report)  # every view ran (the last layer's name depends on the model)
    assert report == {name: [] for name in report}


def test_a_changed_weight_is_found(reference, tiny_net, tiny_enc):
    changed = copy.deepcopy(tiny_net)
    with torch.no_grad():
        changed.blocks[-1].mlp.w2.weight.mul_(1.5)
    report = parity.compare(reference, runner(changed, tiny_enc), torch.float32, PROMPT, CORRUPTED)
    for name in ("analyze", "next logits", "lens logits", "generation steps with attention", "attribution"):
        assert report[name], name
    assert not report["layer 0"]  # what comes before the change agrees
    assert not any("raised" in line for found in report.values() for line in found)


def test_every_view_runs_in_bfloat16(reference, tiny_net, tiny_enc):
    """Before this check, attribution raised on a bfloat16 model (a bfloat16 activation times a float32 readout)."""
    report = parity.compare(reference, runner(copy.deepcopy(tiny_net).to(torch.bfloat16), tiny_enc), torch.bfloat16,
                            PROMPT, CORRUPTED)
    assert VIEWS <= set(report)
    raised = {name: found for name, found in report.items() if any("raise" in line for line in found)}
    assert not raised


def test_numbers_flags_a_tensor_outside_host_memory_and_leaves_clocks_out():
    found = parity.numbers({"logits": torch.empty(3, device="meta"), "seconds": 1.5, "ids": [1, 2]})
    assert found["['logits']"] == "a tensor on meta, not in host memory"
    assert "['seconds']" not in found and found["['ids'][1]"] == 2
    assert parity.differences(found, {**found, "['logits']": np.zeros(3)}, torch.float32)


def test_differences_measure_a_row_against_its_kind_and_ids_by_fraction():
    rows = {"[0]": np.array([10.0, -8.0]), "[1]": np.array([0.001, 0.002]), "ids": np.array([5, 6, 7])}
    close = {"[0]": np.array([10.001, -8.0]), "[1]": np.array([0.002, 0.002]), "ids": np.array([5, 6, 7])}
    assert parity.differences(rows, close, torch.float32) == []  # 0.001 off a kind whose largest is 10
    far = {**close, "[1]": np.array([0.5, 0.002])}
    assert parity.differences(rows, far, torch.float32) == [
        "[1]: differs by 4.99e-02 of the largest magnitude of its kind (tolerance 2e-03)"]
    assert parity.differences(rows, {**close, "ids": np.array([5, 9, 7])}, torch.float32) == [
        "ids: 33.3% of its values differ (tolerance 1%)"]
    nan = {"x": np.array([np.nan, 1.0])}
    assert parity.differences(nan, nan, torch.float32) == []  # NaN where the reference has NaN agrees
    assert parity.differences(nan, {"x": np.array([0.0, 1.0])}, torch.float32) == ["x: NaN or infinity at other places"]
