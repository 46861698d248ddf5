"""BPE from scratch against Hugging Face tokenizers' trainer, and the replay of merges against the real tokenizer."""

from __future__ import annotations

import json

import pytest

from model.bpe import MAX_TRAINING_CHARS, train_bpe
from model.tokenizer import merge_steps

from ..corpus import CORPUS

TEXTS = [
    "the cat sat on the mat. the cat ate the rat",
    "aaaa aaa aa a abab ababab",  # repeated pairs inside a word: left to right, without overlap
    " ".join(CORPUS),  # digits, whitespace runs, contractions, many scripts, emoji, code
]


def tokenizers_merges(text: str, merges: int) -> list[tuple[str, str]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=256 + merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, min_frequency=1)
    tok.train_from_iterator([text], trainer)
    return [tuple(m) for m in json.loads(tok.to_str())["model"]["merges"]]


@pytest.mark.parametrize("text", TEXTS, ids=["cats", "repeats", "corpus"])
def test_learns_the_same_merges_as_tokenizers(text):
    merges = 150
    ours = train_bpe(text, merges)
    assert [(s.left, s.right) for s in ours.steps] == tokenizers_merges(text, merges)


def test_each_step_reports_true_counts():
    result = train_bpe("the cat sat on the mat", 5)
    first = result.steps[0]
    assert (first.left, first.right, first.count) == ("a", "t", 3)  # cat, sat, mat
    assert first.candidates[0][:3] == ("a", "t", 3)
    a_count, t_count = 3, 5  # 'a' in cat, sat, mat; 't' in the, cat, sat, the, mat
    assert first.candidates[0][3] == pytest.approx(3 / (a_count * t_count))  # WordPiece's score
    assert result.initial_tokens == len("the cat sat on the mat".encode())
    assert [s.vocab_size for s in result.steps] == [257, 258, 259, 260, 261]
    assert all(a.tokens > b.tokens for a, b in zip(result.steps, result.steps[1:]))


@pytest.mark.parametrize("text,merges,message", [
    ("", 5, "training text"), ("   ", 5, "training text"), ("x" * (MAX_TRAINING_CHARS + 1), 5, "limit"),
    ("the cat", 0, "merges must be"), ("the cat", 10_000, "merges must be"),
])
def test_bad_training_input_gets_a_message(text, merges, message):
    with pytest.raises(ValueError, match=message):
        train_bpe(text, merges)


def test_replaying_the_models_merges_gives_its_tokens(real):
    _, enc = real
    ranks = enc._mergeable_ranks
    for word in (" capital", " tokenization", "Paris", " 😀", " antidisestablishmentarianism"):
        steps = merge_steps(word.encode(), ranks)
        assert steps[0].parts == [bytes([b]) for b in word.encode()]
        assert steps[-1].parts == [enc.decode_single_token_bytes(t) for t in enc.encode(word)]
        assert all(s.rank == ranks[s.merged] for s in steps[1:])
