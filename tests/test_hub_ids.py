"""Bare hub ids (`gpt2`) are accepted; without network they fail in one line, at once, naming the id and what to
do, with nothing written."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest

from llmcycle import loading
from llmcycle.errors import ModelLoadError


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    loading.hub_files.cache_clear()
    yield
    loading.hub_files.cache_clear()


@pytest.mark.parametrize("name", ["gpt2", "distilgpt2", "openai-community/gpt2", "Qwen/Qwen2.5-0.5B-Instruct"])
def test_hub_id_grammar_accepts_bare_and_owned_ids(name):
    assert loading.is_hub_id(name)


@pytest.mark.parametrize("name", ["a b", "a/b/c", "x--y", "../m", "name.", "-x"])
def test_hub_id_grammar_rejects_what_cannot_be_an_id(name):
    assert not loading.is_hub_id(name)


def test_bare_id_offline_fails_in_one_line_and_writes_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    code, out, err = cli("generate", "-m", "gpt2", "--input", prompts, "--out", tmp_path / "out.jsonl")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: gpt2: not a local dir") and "HF_HUB_OFFLINE" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_unreachable_hub_fails_in_one_quick_line(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once, no retries
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        loading.check_exists("distilgpt2")
    assert time.perf_counter() - started < 10
    text = str(err.value)
    assert text.startswith("distilgpt2: not a local dir") and "cannot be reached" in text and "\n" not in text
    assert "HF_HUB_OFFLINE=1" in text and "local model dir" in text


def test_local_looking_names_are_not_hub_lookups(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model dir"):
        loading.check_exists(str(tmp_path / "nowhere"))
    loading.check_exists(str(tmp_path))  # an existing dir passes without asking the hub
