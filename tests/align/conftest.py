"""Fixtures for alignment: preference data with a planted preference (chosen replies carry a marker word)."""

from __future__ import annotations

import pytest

from tests.conftest import SENTENCES

MARKER = "banana"


def preference_records(n: int, offset: int = 0) -> list[dict]:
    """Pairs whose chosen reply contains MARKER and whose rejected reply does not (otherwise alike)."""
    out = []
    for i in range(offset, offset + n):
        reply = SENTENCES[(i + 2) % 8]
        out.append({
            "prompt": [{"role": "user", "content": f"{SENTENCES[i % 8]} ({i})"}],
            "chosen": [{"role": "assistant", "content": f"{MARKER} {reply}"}],
            "rejected": [{"role": "assistant", "content": f"{reply} okay"}],
        })
    return out


@pytest.fixture(scope="session")
def pref_data_dir(tmp_path_factory):
    from llmcycle.records import write_jsonl

    root = tmp_path_factory.mktemp("pref_data")
    write_jsonl(root / "train.jsonl", preference_records(48))
    write_jsonl(root / "val.jsonl", preference_records(16, offset=100))
    write_jsonl(root / "test.jsonl", preference_records(16, offset=200))
    return root


def small_align(method: str = "dpo", **kw):
    from llmcycle.train.align import AlignConfig

    train = {"max_steps": 8, "batch_size": 8, "lr": 5e-3, "warmup_steps": 0, "eval_every": 4, "save_every": 4,
             "log_every": 2, "eval_batches": 2}
    train.update(kw.pop("train", {}))
    return AlignConfig(method=method, lora={"r": 8, "alpha": 16, "dropout": 0.0}, train=train, max_seq_len=64, **kw)
