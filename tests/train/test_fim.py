"""Fill-in-the-middle: examples round-trip, the mix rate is honoured, the transform is deterministic by seed, the
tokenizer check, and the inference side (infill prompt, middle extraction) matches the training layout."""

from __future__ import annotations

import random

import pytest

from llmcycle.modeldir.fim import (FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, FIM_TOKENS, FimConfig, apply_fim,
                               ensure_fim_tokens, extract_middle, fim_ids, fim_text, fim_token_ids, infill_prompt,
                               restore, transform_record)
from llmcycle.errors import ConfigError, DataError

TEXTS = ["def add(a, b):\n    return a + b\n", "naïve café 東京 — it's done.", "x", "", "hello there, how are you?"]


@pytest.mark.parametrize("spm", [False, True])
def test_char_examples_round_trip(spm):
    for seed in range(200):
        text = TEXTS[seed % len(TEXTS)]
        example = fim_text(text, random.Random(seed), spm)
        assert example.startswith(FIM_PREFIX) and example.count(FIM_MIDDLE) == 1
        assert "".join(restore(split_markers(example), FIM_TOKENS)) == text


def split_markers(example: str) -> list[str]:
    """Characters, with each marker as one item (the way a tokenizer sees them)."""
    out, i = [], 0
    while i < len(example):
        mark = next((m for m in FIM_TOKENS if example.startswith(m, i)), None)
        out.append(mark or example[i])
        i += len(mark) if mark else 1
    return out


@pytest.mark.parametrize("spm", [False, True])
def test_token_examples_round_trip(spm):
    marks = [1001, 1002, 1003]
    for seed in range(100):
        ids = list(range(seed % 17))
        example = fim_ids(ids, random.Random(seed), spm, marks)
        assert len(example) == len(ids) + 3 and restore(example, marks) == ids


def test_psm_layout_is_prefix_suffix_middle():
    rng = random.Random(0)
    example = fim_text("abcdefghij", rng, spm=False)
    prefix, rest = example[len(FIM_PREFIX):].split(FIM_SUFFIX)
    suffix, middle = rest.split(FIM_MIDDLE)
    assert prefix + middle + suffix == "abcdefghij"
    assert example == infill_prompt(prefix, suffix) + middle  # training and inference agree on the layout


def test_spm_layout_puts_the_suffix_first():
    example = fim_text("abcdefghij", random.Random(3), spm=True)
    assert example.startswith(FIM_PREFIX + FIM_SUFFIX)
    suffix, prefix_middle = example[len(FIM_PREFIX + FIM_SUFFIX):].split(FIM_MIDDLE)
    assert "abcdefghij".endswith(suffix) and prefix_middle + suffix == "abcdefghij"


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_mix_rate_is_honoured(rate):
    records = [{"text": f"record number {i} with some words"} for i in range(2000)]
    out = list(apply_fim(records, FimConfig(rate=rate, seed=1)))
    share = sum(FIM_PREFIX in r["text"] for r in out) / len(out)
    assert abs(share - rate) < 0.035, share
    spm = sum(r["text"].startswith(FIM_PREFIX + FIM_SUFFIX) for r in out)
    assert rate == 0 or abs(spm / (share * len(out)) - 0.5) < 0.06


def test_deterministic_by_seed_and_record_not_order():
    records = [{"text": f"the quick brown fox {i} jumps over the lazy dog"} for i in range(50)]
    first = list(apply_fim(records, FimConfig(seed=7)))
    assert first == list(apply_fim(records, FimConfig(seed=7)))
    assert first != list(apply_fim(records, FimConfig(seed=8)))
    assert transform_record(records[30], 30, FimConfig(seed=7)) == first[30]  # alone, same result


def test_chat_records_change_only_assistant_turns():
    record = {"messages": [{"role": "user", "content": "hi, tell me a story"},
                           {"role": "assistant", "content": "once upon a time there was a fox"}], "meta": {"id": 1}}
    out = transform_record(record, 0, FimConfig(rate=1.0))
    assert out["messages"][0] == record["messages"][0] and out["meta"] == record["meta"]
    reply = out["messages"][1]["content"]
    assert reply.startswith(FIM_PREFIX) and "".join(restore(split_markers(reply), FIM_TOKENS)) == \
        "once upon a time there was a fox"
    assert record["messages"][1]["content"] == "once upon a time there was a fox"  # input untouched


def test_text_holding_a_marker_is_left_alone_and_bad_records_refused():
    keep = {"text": f"already {FIM_MIDDLE} here"}
    assert transform_record(keep, 0, FimConfig(rate=1.0)) == keep
    with pytest.raises(DataError, match="record 4"):
        transform_record({"prompt": "x"}, 4, FimConfig())
    with pytest.raises(ConfigError, match="level token"):
        transform_record({"text": "abc"}, 0, FimConfig(rate=1.0, level="token"))


def test_tokenizer_without_fim_tokens_is_refused_or_extended(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    with pytest.raises(ConfigError) as err:
        fim_token_ids(tok)
    assert "<fim_prefix>" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no room"):
        ensure_fim_tokens(tok, embedding_rows=len(tok), where="tiny")
    ids = ensure_fim_tokens(tok, embedding_rows=len(tok) + 8)
    assert sorted(ids.values()) == list(range(len(tok) - 3, len(tok)))
    text = fim_text("hello there, how are you?", random.Random(2), spm=False)
    encoded = tok(text, add_special_tokens=False)["input_ids"]
    assert [i for i in encoded if i in ids.values()] == [ids[FIM_PREFIX], ids[FIM_SUFFIX], ids[FIM_MIDDLE]]


def test_token_level_uses_the_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    ensure_fim_tokens(tok, embedding_rows=len(tok) + 3)
    out = transform_record({"text": "hello there, how are you doing today?"}, 0, FimConfig(rate=1.0, level="token"),
                           tok)
    assert out["text"].startswith(FIM_PREFIX) and FIM_MIDDLE in out["text"]


def test_extract_middle_cuts_at_the_first_end_marker():
    assert extract_middle("return a + b<fim_pad><fim_pad>") == "return a + b"
    assert extract_middle("x = 1<|endoftext|>junk<file_sep>") == "x = 1"
    assert extract_middle("x = 1\n\ndef other():", stops=["\n\n"]) == "x = 1"
    assert extract_middle("no marker") == "no marker"
    assert infill_prompt("a", "c", spm=True) == f"{FIM_PREFIX}{FIM_SUFFIX}c{FIM_MIDDLE}a"
