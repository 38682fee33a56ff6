"""FIM wired through the lifecycle: the tokenizer stage reserves the markers, FIM examples round-trip through the
tokenizer and the chat template, a tiny pretrain with a FIM mix runs, and `generate --prefix/--suffix` returns a
middle (or one line when the model's tokenizer has no markers)."""

from __future__ import annotations

import json
import random

import pytest

from llmcycle.modeldir import tokenize_with_mask
from llmcycle.modeldir.fim import FIM_TOKENS, FimConfig, fim_ids, fim_text, fim_token_ids, restore
from llmcycle.tokenizer import TokenizerConfig, run as train_tokenizer
from llmcycle.train.packing import load_packed
from llmcycle.train.pretrain import PretrainConfig, run as pretrain

FAST = {"seq_len": 32, "sample_tokens": 4,
        "train": {"max_steps": 6, "batch_size": 4, "warmup_steps": 1, "eval_every": 6, "save_every": 6}}


@pytest.fixture(scope="module")
def fim_tokenizer(chat_data_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    out = train_tokenizer(TokenizerConfig(vocab_size=400, fim=True), chat_data_dir,
                          tmp_path_factory.mktemp("fimtok") / "tok")
    return AutoTokenizer.from_pretrained(out)


@pytest.fixture(scope="module")
def fim_base(chat_data_dir, tiny_tokenizer_dir, tmp_path_factory):
    """A tiny pretrain with half its records FIM-rewritten, on a tokenizer trained without the markers."""
    cfg = PretrainConfig(preset="tiny", fim={"rate": 0.5}, **FAST)
    return pretrain(cfg, chat_data_dir, tiny_tokenizer_dir, tmp_path_factory.mktemp("fim") / "base")


def test_tokenizer_stage_reserves_the_markers_only_when_asked(fim_tokenizer, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    assert set(fim_token_ids(fim_tokenizer)) == set(FIM_TOKENS)
    assert not set(FIM_TOKENS) & set(AutoTokenizer.from_pretrained(tiny_tokenizer_dir).get_vocab())


@pytest.mark.parametrize("spm", [False, True])
def test_fim_examples_round_trip_through_the_tokenizer(fim_tokenizer, spm):
    text = "def add(a, b):\n    return a + b  # naïve café"
    example = fim_text(text, random.Random(3), spm)
    ids = fim_tokenizer(example, add_special_tokens=False)["input_ids"]
    marks = list(fim_token_ids(fim_tokenizer).values())
    assert sorted(i for i in ids if i in marks) == sorted(marks)  # each marker one token, once
    assert fim_tokenizer.decode(ids) == example
    plain = fim_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert restore(fim_ids(plain, random.Random(5), spm, marks), marks) == plain


def test_fim_assistant_turn_round_trips_through_the_chat_template(fim_tokenizer):
    from llmcycle.modeldir.fim import transform_record

    record = {"messages": [{"role": "user", "content": "finish this"},
                           {"role": "assistant", "content": "the quick brown fox jumps"}]}
    fim = transform_record(record, 0, FimConfig(rate=1.0))["messages"]
    example = tokenize_with_mask(fim_tokenizer, fim, "test")
    trained = [i for i, label in zip(example.input_ids, example.labels) if label != -100]
    answer = fim_tokenizer(fim[1]["content"], add_special_tokens=False)["input_ids"]
    assert trained[:len(answer)] == answer  # the whole FIM turn, markers included, is what fine-tuning learns
    assert fim_tokenizer.decode(trained[:len(answer)]) == fim[1]["content"]


def test_fim_mix_rewrites_only_the_train_split(chat_data_dir, fim_tokenizer):
    from llmcycle.modeldir.fim import fim_transform

    marks = set(fim_token_ids(fim_tokenizer).values())
    plain = load_packed(chat_data_dir, "train", fim_tokenizer, 32)
    mixed = load_packed(chat_data_dir, "train", fim_tokenizer, 32, fim_transform(FimConfig(rate=0.5), fim_tokenizer))
    assert not marks & set(plain.rows.flatten().tolist()) and marks <= set(mixed.rows.flatten().tolist())
    assert fim_transform(None) is None and fim_transform(FimConfig(rate=0.0)) is None  # default: nothing changes


def test_tiny_pretrain_with_fim_mix_runs(fim_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = json.loads((fim_base / "manifest.json").read_text())
    assert manifest["config"]["fim"]["rate"] == 0.5 and manifest["metrics"]["steps"] == 6
    tok = AutoTokenizer.from_pretrained(fim_base)
    ids = fim_token_ids(tok)  # added to the tokenizer, with rows in the model built from it
    assert max(ids.values()) < AutoModelForCausalLM.from_pretrained(fim_base).get_input_embeddings().num_embeddings


def test_generate_infill_returns_a_middle(fim_base, cli):
    code, out, err = cli("generate", "-m", fim_base, "--prefix", "hello there", "--suffix", " are you",
                         "--max-new-tokens", "6", "--greedy")
    assert code == 0, err
    assert not any(mark in out for mark in FIM_TOKENS)
    from llmcycle.infer import Engine
    from llmcycle.infer.infill import infill, infill_ids, infill_stop_ids

    engine = Engine.load(str(fim_base))
    [completion] = infill(engine, [("hello there", " are you")], engine.default_settings.replace(max_new_tokens=6))
    assert out.rstrip("\n") == completion.text and completion.finish_reason in ("eos", "stop", "length")
    marks = fim_token_ids(engine.tokenizer)
    prompt = infill_ids(engine.tokenizer, "hello there", " are you")
    assert prompt[1] == marks["<fim_prefix>"] and prompt[-1] == marks["<fim_middle>"]
    assert set(marks.values()) <= set(infill_stop_ids(engine.tokenizer, engine.eos_token_ids))


def test_infill_input_records_and_a_model_without_markers(fim_base, make_tiny_model, tmp_path, cli):
    requests = tmp_path / "in.jsonl"
    requests.write_text(json.dumps({"prefix": "hello", "suffix": "you"}) + "\n" + json.dumps({"prompt": "hi"}) + "\n")
    code, _, err = cli("generate", "-m", fim_base, "-i", requests, "-o", tmp_path / "out.jsonl",
                       "--max-new-tokens", "3")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r.get("prefix") for r in rows] == ["hello", None] and all("reply" in r for r in rows)
    code, _, err = cli("generate", "-m", make_tiny_model("llama"), "--prefix", "a", "--suffix", "b")
    assert code == 2 and "<fim_prefix>" in err and len(err.strip().splitlines()) == 1


def test_finetune_examples_take_the_fim_mix_on_assistant_turns(chat_data_dir, fim_tokenizer):
    from llmcycle.modeldir.fim import fim_transform
    from llmcycle.train.sft_data import build_examples

    marks = set(fim_token_ids(fim_tokenizer).values())
    plain, _ = build_examples(fim_tokenizer, chat_data_dir, "train", 256)
    mixed, _ = build_examples(fim_tokenizer, chat_data_dir, "train", 256,
                              transform=fim_transform(FimConfig(rate=1.0), fim_tokenizer))
    trained = {i for e in mixed for i, label in zip(e.input_ids, e.labels) if label != -100}
    assert marks <= trained and not marks & {i for e in plain for i in e.input_ids}
