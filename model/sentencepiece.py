"""A SentencePiece-style BPE tokenizer with byte fallback (Gemma's), with the interface of `ModelEncoding`.

Gemma's vocabulary is not byte-level: its tokens are text, a space is spelled "▁" (U+2581), and a character the
vocabulary lacks is written as its UTF-8 bytes, one token each (`<0xE4>`, byte fallback). A GGUF stores no merges
for it, so they come from the vocabulary, as transformers builds them (`generate_merges` over the tokens, ranked
by the merged token's place in the file, then the longer left part first). Encoding follows Hugging Face
`tokenizers` step by step, and the tests compare it with transformers' tokenizer built from the same GGUF:

1. the text is cut at the added tokens, longest match first: the user-defined ones (newline and tab runs,
   `[multimodal]`, ...) always, the control ones (`<start_of_turn>`, ...) only when `allowed_special` says so;
2. in each other stretch every space becomes "▁" (no prefix space, no further split: the stretch is one word);
3. the stretch starts as one symbol per character (byte tokens for a character not in the vocabulary), and the
   adjacent pair whose merged token ranks first is merged, leftmost first on a tie, until no pair merges.

Control tokens are never made by a merge: typed as text, `<bos>` stays text, as `ModelEncoding` keeps
`<|im_start|>` text unless asked.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Collection, Sequence
from typing import AbstractSet, Literal

from .loaders import TokenizerSpec
from .tokenizer import ModelEncoding, ReplayStep, checked

SPACE = "\u2581"
CONTROL, USER_DEFINED, BYTE = 3, 4, 6  # GGUF token types


class SentencePieceEncoding:
    """Encode and decode a SentencePiece BPE vocabulary (tokens, GGUF token types, BOS/EOS ids)."""

    kind = "sentencepiece"

    def __init__(self, tokens: Sequence[str], token_types: Sequence[int], name: str = "model",
                 bos_token_id: int | None = None, eos_token_id: int | None = None, add_bos: bool = True,
                 chat_template: str | None = None) -> None:
        self.name = self.spec_name = name
        self.bos_token_id, self.eos_token_id, self.add_bos = bos_token_id, eos_token_id, add_bos
        self.chat_template = chat_template
        # transformers' Gemma tokenizer spells a token of two or more spaces with "▁"s; so do we
        spelled = [SPACE * len(t) if t and " " in t and not t.strip(" ") else t for t in tokens]
        self._spelled = spelled
        self.n_vocab = len(tokens)
        self.max_token_value = self.n_vocab - 1
        self._ids: dict[str, int] = {}
        for i, text in enumerate(spelled):
            self._ids[text] = i  # a repeated spelling keeps its last id, as a Python dict of the vocabulary does
        self._control = {t: i for i, (t, kind) in enumerate(zip(tokens, token_types)) if kind == CONTROL}
        self._user = {t: i for i, (t, kind) in enumerate(zip(tokens, token_types))
                      if kind == USER_DEFINED and t in self._ids}  # as transformers adds them: by their spelling
        self._control_ids = frozenset(self._control.values())
        self._bytes = {}  # byte value -> its fallback token
        for i, (t, kind) in enumerate(zip(tokens, token_types)):
            if kind == BYTE and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                self._bytes[int(t[3:5], 16)] = i
        self._byte_of = {i: b for b, i in self._bytes.items()}
        self._types = list(token_types)

    # -- the pieces of text -------------------------------------------------------------

    @functools.cached_property
    def _added_by_first(self) -> dict[tuple[bool, str], dict[int, dict[str, int]]]:
        """Added tokens by (control?, first character), then length: what a position may start."""
        table: dict[tuple[bool, str], dict[int, dict[str, int]]] = {}
        for control, tokens in ((False, self._user), (True, self._control)):
            for text, i in tokens.items():
                table.setdefault((control, text[0]), {}).setdefault(len(text), {})[text] = i
        return table

    def _split_added(self, text: str, control: AbstractSet[str] | None) -> list[str | int]:
        """The text as plain stretches (str) and added tokens (int), longest match first at each position."""
        out: list[str | int] = []
        start = i = 0
        firsts = self._added_by_first
        while i < len(text):
            best = None
            for is_control in (False, True):
                if is_control and not control:
                    continue
                for length, group in firsts.get((is_control, text[i]), {}).items():
                    piece = text[i:i + length]
                    if piece in group and (not is_control or piece in control) and (
                            best is None or length > len(best[0])):
                        best = piece, group[piece]
            if best is None:
                i += 1
                continue
            if start < i:
                out.append(text[start:i])
            out.append(best[1])
            i += len(best[0])
            start = i
        if start < len(text):
            out.append(text[start:])
        return out

    def _rank(self, left: str, right: str) -> tuple[int, int] | None:
        merged = self._ids.get(left + right)
        if merged is None or merged in self._control_ids:
            return None
        return merged, -len(left)

    def _symbols(self, word: str) -> list[tuple[str, int]]:
        """(text, id) of each character, or of each of its bytes where the vocabulary lacks it."""
        out = []
        for ch in word:
            i = self._ids.get(ch)
            if i is not None and i not in self._control_ids:
                out.append((ch, i))
            else:
                out += [(f"<0x{b:02X}>", self._bytes[b]) for b in ch.encode("utf-8")]
        return out

    def _bpe(self, word: str, steps: list[ReplayStep] | None = None) -> list[int]:
        """`tokenizers`' BPE on one word: merge the best-ranked adjacent pair (leftmost on a tie) until none is left."""
        symbols = self._symbols(word)
        texts = [s for s, _ in symbols]
        ids = [i for _, i in symbols]
        n = len(texts)
        nxt, prv = list(range(1, n + 1)), list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for p in range(n - 1):
            rank = self._rank(texts[p], texts[p + 1])
            if rank is not None:
                heap.append((rank, p, texts[p], texts[p + 1]))
        heapq.heapify(heap)
        if steps is not None:
            steps.append(ReplayStep(self._parts(texts, alive), None, None))
        while heap:
            rank, p, left, right = heapq.heappop(heap)
            q = nxt[p]
            if not alive[p] or q >= n or texts[p] != left or texts[q] != right:
                continue
            texts[p], ids[p] = left + right, rank[0]
            alive[q] = False
            nxt[p] = nxt[q]
            if nxt[p] < n:
                prv[nxt[p]] = p
            if prv[p] >= 0 and (r := self._rank(texts[prv[p]], texts[p])) is not None:
                heapq.heappush(heap, (r, prv[p], texts[prv[p]], texts[p]))
            if nxt[p] < n and (r := self._rank(texts[p], texts[nxt[p]])) is not None:
                heapq.heappush(heap, (r, p, texts[p], texts[nxt[p]]))
            if steps is not None:
                steps.append(ReplayStep(self._parts(texts, alive), self.token_bytes(rank[0]), rank[0]))
        return [ids[p] for p in range(n) if alive[p]]

    def _parts(self, texts: list[str], alive: list[bool]) -> list[bytes]:
        return [self._text_bytes(texts[p]) for p in range(len(texts)) if alive[p]]

    def _text_bytes(self, text: str) -> bytes:
        if len(text) == 6 and text.startswith("<0x") and self._ids.get(text) in self._byte_of:
            return bytes([self._byte_of[self._ids[text]]])
        return text.replace(SPACE, " ").encode("utf-8")

    # -- encoding, as ModelEncoding does ---------------------------------------------------

    def unencodable(self, text: str) -> list[tuple[int, str]]:
        """(index, character) of each character with no UTF-8 bytes (a lone surrogate): byte fallback takes the rest."""
        if text.isascii():
            return []
        return [(i, ch) for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF]

    def byte_fallback(self, text: str) -> list[tuple[int, str]]:
        """(index, character) of each character the vocabulary lacks, which is encoded as its bytes."""
        return [(i, ch) for i, ch in enumerate(text) if ch != " " and self._ids.get(ch) is None]

    def check(self, text: str, errors: Literal["strict", "replace"] = "strict") -> str:
        return checked(text, self.unencodable(text), self.name, errors)

    def encode(self, text: str, *, allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
               disallowed_special: Literal["all"] | Collection[str] = (),
               errors: Literal["strict", "replace"] = "strict") -> list[int]:
        """Token ids of text (no BOS: `encode_prompt` adds it); control tokens' text becomes their ids only when
        `allowed_special` names them ("all": every one)."""
        text = self.check(text, errors)
        control = self.special_tokens_set if allowed_special == "all" else frozenset(allowed_special)
        out: list[int] = []
        for piece in self._split_added(text, control):
            if isinstance(piece, int):
                out.append(piece)
            else:
                out += self._bpe(piece.replace(" ", SPACE))
        return out

    def encode_ordinary(self, text: str, *, errors: Literal["strict", "replace"] = "strict") -> list[int]:
        return self.encode(text, errors=errors)

    def encode_batch(self, texts: list[str], **kwargs) -> list[list[int]]:
        return [self.encode(t, **kwargs) for t in texts]

    def encode_prompt(self, text: str) -> list[int]:
        """What the model reads for a prompt: BOS first when the tokenizer adds it (Gemma's does)."""
        ids = self.encode(text)
        return [self.bos_token_id, *ids] if self.add_bos and self.bos_token_id is not None else ids

    def merge_steps(self, text: str) -> list[tuple[bytes, list[ReplayStep]]]:
        """How each stretch between added tokens is built, merge by merge (a space shown as a space)."""
        out = []
        for piece in self._split_added(self.check(text, errors="replace"), None):
            if isinstance(piece, str):
                steps: list[ReplayStep] = []
                self._bpe(piece.replace(" ", SPACE), steps)
                out.append((piece.encode("utf-8"), steps))
        return out

    # -- chat: a base model has none ------------------------------------------------------

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        raise ValueError(f"{self.name} is a base model: it has no chat template")

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> list[int]:
        raise ValueError(f"{self.name} is a base model: it has no chat template")

    # -- decoding and the vocabulary -------------------------------------------------------

    def token_bytes(self, token: int) -> bytes:
        if not 0 <= token < self.n_vocab:
            raise KeyError(token)
        if token in self._byte_of:
            return bytes([self._byte_of[token]])
        return self._spelled[token].replace(SPACE, " ").encode("utf-8")

    decode_single_token_bytes = token_bytes

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    @property
    def special_tokens_set(self) -> frozenset[str]:
        return frozenset(self._control)

    def is_special_token(self, token: int) -> bool:
        return token in self._control_ids

    def encode_single_token(self, text: str) -> int:
        if text in self._control:
            return self._control[text]
        if text in self._ids:
            return self._ids[text]
        raise KeyError(text)

    @property
    def special_ids(self) -> list[int]:
        return sorted(self._control_ids)

    @property
    def missing_bytes(self) -> frozenset[int]:
        return frozenset(b for b in range(256) if b not in self._bytes)

    @property
    def n_merges(self) -> int:
        """Tokens made by merging: ordinary tokens of more than one character."""
        return sum(1 for t, kind in zip(self._spelled, self._types) if kind == 1 and len(t) > 1)

    def token_texts(self, vocab_size: int) -> list[str]:
        """Each id's text (a space as a space; a byte token's byte decoded, U+FFFD where it is not text alone)."""
        texts = [""] * vocab_size
        for i in range(min(vocab_size, self.n_vocab)):
            texts[i] = self.token_bytes(i).decode("utf-8", errors="replace")
        return texts

    def __getstate__(self):
        raise TypeError("SentencePieceEncoding is built from a TokenizerSpec; pickle the spec instead")


def encoding_for(spec: TokenizerSpec) -> ModelEncoding | SentencePieceEncoding:
    """The model's tokenizer: a `ModelEncoding` for byte-level BPE, a `SentencePieceEncoding` for Gemma's kind."""
    if spec.kind == "sentencepiece":
        return SentencePieceEncoding(spec.tokens, spec.token_types or [], spec.name, spec.bos_token_id,
                                     spec.eos_token_id, spec.add_bos, spec.chat_template)
    return ModelEncoding(spec)
