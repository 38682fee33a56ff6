"""GGUF fixtures: tiny models exported once per (arch, quant), and llama.cpp servers that close after the test."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("xllamacpp")  # a dev dependency: scripts/setup.sh dev installs it


@pytest.fixture(scope="session", autouse=True)
def _gguf_cache(tmp_path_factory):
    """Imported GGUFs go to a per-session cache, never the user's."""
    import os

    old = os.environ.get("LLMCYCLE_CACHE")
    os.environ["LLMCYCLE_CACHE"] = str(tmp_path_factory.mktemp("llmcycle_cache"))
    yield
    if old is None:
        os.environ.pop("LLMCYCLE_CACHE", None)
    else:
        os.environ["LLMCYCLE_CACHE"] = old


@pytest.fixture(scope="session")
def peaky_model(make_tiny_model):
    """Tiny random models with large weights: confident logits, so greedy ties do not hinge on rounding."""

    def make(arch: str) -> Path:
        extra = {"tie_word_embeddings": True} if arch == "qwen2" else {}
        return make_tiny_model(arch, seed=1, initializer_range=0.25, **extra)

    return make


@pytest.fixture(scope="session")
def exported(peaky_model, tmp_path_factory):
    from llmcycle.export import export_gguf

    cache: dict[tuple[str, str], Path] = {}

    def get(arch: str, quant: str) -> Path:
        if (arch, quant) not in cache:
            cache[(arch, quant)] = export_gguf(peaky_model(arch), tmp_path_factory.mktemp(f"gguf_{arch}_{quant}"), quant)
        return cache[(arch, quant)]

    return get


@pytest.fixture
def llamacpp():
    from llmcycle.gguf.llamacpp import LlamaCpp

    opened: list[LlamaCpp] = []

    def open_(path: Path, n_ctx: int = 256) -> LlamaCpp:
        server = LlamaCpp(path, n_ctx=n_ctx, exact=True)
        opened.append(server)
        return server

    yield open_
    for server in opened:
        server.close()



def chat_texts(data_dir: Path, split: str) -> list[str]:
    from llmcycle.records import read_jsonl

    return [" ".join(m["content"] for m in rec["messages"]) for _, rec in read_jsonl(data_dir / f"{split}.jsonl")]


@pytest.fixture(scope="session")
def val_texts(chat_data_dir) -> list[str]:
    return chat_texts(chat_data_dir, "val")


@pytest.fixture(scope="session")
def trained_model(make_tiny_model, chat_data_dir, tmp_path_factory):
    """A tiny Llama fitted briefly to the chat records: confident like a real model, where a random one has
    near-ties that any rounding flips."""
    import shutil

    import torch

    from llmcycle.loading import load_model
    from llmcycle.loading import load_tokenizer

    src = make_tiny_model("llama", seed=2)
    tok, model = load_tokenizer(src), load_model(src, dtype="fp32").train()
    rows = [tok(t)["input_ids"][:48] for t in chat_texts(chat_data_dir, "train")]
    batch = torch.tensor([r + [tok.pad_token_id] * (48 - len(r)) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(60):
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("trained_llama")
    model.eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    return out
