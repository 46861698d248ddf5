"""The model's tiktoken Encoding against the Hugging Face `tokenizers` library on the same vocabulary."""

from __future__ import annotations

import random

import pytest
import tiktoken
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from model import UnencodableTextError, available_encodings, get_encoding
from model.tokenizer import ModelEncoding

from ..corpus import CORPUS


@pytest.fixture(scope="module")
def spec():
    from model import load_checkpoint

    return load_checkpoint().tokenizer


@pytest.fixture(scope="module")
def enc(spec):
    return ModelEncoding(spec)


@pytest.fixture(scope="module")
def reference(spec):
    """SmolLM2's tokenizer as `tokenizers` builds it: digits isolated, then GPT-2's byte-level split.

    (transformers' GGUF conversion drops the Digits step, so it is not the reference here.)
    """
    vocab = {t: i for i, t in enumerate(spec.tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in spec.merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def test_is_a_real_tiktoken_encoding(enc):
    assert isinstance(enc, tiktoken.Encoding)
    assert enc.n_vocab == 49152
    assert enc.eos_token_id == 2 and enc.bos_token_id == 1
    assert enc.decode_single_token_bytes(enc.encode(" the")[0]) == b" the"


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_matches_tokenizers_on_the_corpus(enc, reference, text):
    ours = enc.encode(text)
    assert ours == reference.encode(text, add_special_tokens=False).ids
    assert enc.decode(ours) == text


def test_matches_tokenizers_on_random_text(enc, reference):
    """Random strings built from the pieces the pre-tokenizer regex cares about."""
    atoms = ["a", "Z", "é", "ß", "中", "ع", "1", "7", "٣", "½", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000",
             "'s", "'t", "'re", "'ll", "'d", "'m", "'ve", "'", ".", ",", "!", "?", "-", "_", "$", "😀", "\u200d",
             "e\u0301"]
    rng = random.Random(1234)
    texts = ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 30))) for _ in range(1500)]
    for text in texts:
        assert enc.encode(text) == reference.encode(text, add_special_tokens=False).ids, repr(text)


def test_special_token_strings_are_plain_text_unless_allowed(enc, reference, spec):
    text = "<|im_start|>user\nhi<|im_end|>"
    plain = enc.encode(text)
    assert 1 not in plain and 2 not in plain
    assert enc.decode(plain) == text
    special = enc.encode(text, allowed_special="all")
    assert special[0] == 1 and special[-1] == 2
    with_specials = Tokenizer.from_str(reference.to_str())
    with_specials.add_special_tokens(list(spec.special_tokens))
    assert special == with_specials.encode(text, add_special_tokens=False).ids


def test_every_missing_byte_is_a_clear_error_never_a_panic(enc):
    assert len(enc.missing_bytes) == 21
    assert {0x04, 0x06, 0x13, 0xC0, *range(0xF5, 0x100)} <= enc.missing_bytes
    for b in sorted(enc.missing_bytes):
        if b < 0x80:
            text = f"ok {chr(b)} ok"
            with pytest.raises(UnencodableTextError, match=f"U\\+{b:04X} at 3"):
                enc.encode(text)
            with pytest.raises(ValueError):
                enc.encode_ordinary(text)
            with pytest.raises(ValueError):
                enc.encode_batch(["fine", text])
            with pytest.raises(ValueError):
                enc.encode_to_numpy(text)
            replaced = enc.encode(text, errors="replace")
            assert enc.decode(replaced) == "ok \ufffd ok"
        with pytest.raises(ValueError):
            enc._encode_bytes(bytes([0x61, b, 0x62]))


def test_characters_in_planes_with_missing_lead_bytes(enc):
    """0xF1 and 0xF2 lead the UTF-8 of U+40000..U+BFFFF: such characters are refused, not panicked on."""
    ch = "\U00050000"
    assert ch.encode("utf-8")[0] == 0xF1
    with pytest.raises(UnencodableTextError):
        enc.encode(f"x{ch}y")
    assert enc.decode(enc.encode(f"x{ch}y", errors="replace")) == "x\ufffdy"


def test_partial_utf8_tokens_decode_to_their_bytes(enc):
    ids = enc.encode("👨‍👩‍👧")
    pieces = [enc.token_bytes(i) for i in ids]
    assert b"".join(pieces) == "👨‍👩‍👧".encode()
    assert any(not _is_utf8(p) for p in pieces)  # some token is a fragment of a character


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_chat_template(enc):
    ids = enc.apply_chat_template("What is 2+2?")
    text = enc.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert ids.count(1) == 3 and ids.count(2) == 2  # three <|im_start|>, two <|im_end|>
    with pytest.raises(UnencodableTextError):
        enc.apply_chat_template("bad \x04 byte")


def test_comparison_encodings_offline():
    names = available_encodings()
    assert "cl100k_base" in names
    cl100k = get_encoding("cl100k_base")
    assert cl100k.encode("hello world") == [15339, 1917]
    with pytest.raises(ValueError, match="not available offline"):
        get_encoding("no_such_encoding")


def test_merge_order_is_checked(spec):
    from dataclasses import replace

    swapped = list(spec.merges)
    swapped[0], swapped[500] = swapped[500], swapped[0]
    with pytest.raises(ValueError, match="merge order"):
        ModelEncoding(replace(spec, merges=swapped))
