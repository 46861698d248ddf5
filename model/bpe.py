"""Byte-level BPE from scratch: train merges on a text, merge by merge, and replay a trained tokenizer's merges.

`train_bpe` follows Hugging Face `tokenizers`' BpeTrainer with the ByteLevel pre-tokenizer:
GPT-2's split, each byte written as a printable character (bytes_to_unicode), word
frequencies counted once; at each step the pair with the highest count is merged, ties going
to the smaller pair of ids (the alphabet numbered by character, merges appended). The tests
check that it learns the same merges as `tokenizers`. Each step also keeps what a lesson
shows: the top pair counts, the WordPiece score freq(ab) / (freq(a) x freq(b)) on the same
counts, the vocabulary size and the compression so far.

Replaying a trained vocabulary on one piece of text the way tiktoken (and the model) does, repeatedly merging
the adjacent pair whose result has the lowest rank, is `model.tokenizer.merge_steps`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import regex

from .tokenizer import GPT2_PATTERN, bytes_to_unicode

MAX_TRAINING_CHARS = 20_000
MAX_MERGES = 500


@dataclass(frozen=True)
class MergeStep:
    """One merge of a training run."""

    left: str  # the pair merged, in the byte-level alphabet ("Ġ" is a space)
    right: str
    count: int  # how often the pair occurred when it was chosen
    candidates: list[tuple[str, str, int, float]]  # the top pairs then: (left, right, count, WordPiece score)
    vocab_size: int  # after this merge
    tokens: int  # tokens the training text takes after this merge
    bytes_per_token: float


@dataclass(frozen=True)
class BpeTraining:
    steps: list[MergeStep]
    initial_tokens: int  # tokens before any merge: one per byte
    n_bytes: int
    words: int  # distinct pre-tokenized pieces
    stopped: str  # why training ended


def pretokenize(text: str) -> list[str]:
    """GPT-2's split of the text, each piece spelled in the byte-level alphabet (as ByteLevel does)."""
    alphabet = bytes_to_unicode()
    return ["".join(alphabet[b] for b in piece.encode("utf-8")) for piece in regex.findall(GPT2_PATTERN, text)]


def _merge_word(word: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace each non-overlapping (a, b), left to right, by `new`."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_bpe(text: str, merges: int, min_frequency: int = 1, top: int = 8) -> BpeTraining:
    """Learn up to `merges` merges on the text (ValueError past MAX_TRAINING_CHARS or MAX_MERGES)."""
    if not text or not text.strip():
        raise ValueError("Type some training text first.")
    if len(text) > MAX_TRAINING_CHARS:
        raise ValueError(f"The training text is {len(text):,} characters; the limit is {MAX_TRAINING_CHARS:,}.")
    if not 1 <= merges <= MAX_MERGES:
        raise ValueError(f"merges must be between 1 and {MAX_MERGES}, got {merges}")
    alphabet = sorted(bytes_to_unicode().values())  # ids in character order, as tokenizers numbers its alphabet
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    names = list(alphabet)
    counts = Counter(pretokenize(text))
    words = [([vocab[ch] for ch in piece], n) for piece, n in counts.items()]
    n_bytes = sum(len(w) * n for w, n in words)
    steps: list[MergeStep] = []
    stopped = f"{merges} merges done"
    for _ in range(merges):
        pairs: Counter = Counter()
        singles: Counter = Counter()
        for word, n in words:
            for t in word:
                singles[t] += n
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += n
        if not pairs:
            stopped = "every word is a single token"
            break
        (a, b), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))  # most frequent; ties: smallest ids
        if count < min_frequency:
            stopped = f"no pair occurs {min_frequency} times"
            break
        ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        candidates = [(names[x], names[y], n, wordpiece_score(n, singles[x], singles[y])) for (x, y), n in ranked]
        new = len(names)
        names.append(names[a] + names[b])
        words = [(_merge_word(word, a, b, new), n) for word, n in words]
        tokens = sum(len(w) * n for w, n in words)
        steps.append(MergeStep(names[a], names[b], count, candidates, len(names), tokens, n_bytes / tokens))
    return BpeTraining(steps, n_bytes, n_bytes, len(counts), stopped)


def wordpiece_score(pair: int, a: int, b: int) -> float:
    """WordPiece's merge score for a pair on the same counts: freq(ab) / (freq(a) x freq(b))."""
    return pair / (a * b)
