"""Fixtures for the fine-tuning tests: a Phi-3-style chat template (no generation markers), small training configs,
and a helper that runs the real CLI in-process."""

from __future__ import annotations

import pytest

PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI3_SPECIALS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


@pytest.fixture
def our_tokenizer(tiny_tokenizer_dir):
    from llmcycle.loading import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture
def phi3_tokenizer(tiny_tokenizer_dir):
    """The tiny tokenizer dressed as Phi-3: its role tokens and its template, which has no {% generation %}."""
    from llmcycle.loading import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": PHI3_SPECIALS})
    tok.chat_template = PHI3_TEMPLATE
    return tok


@pytest.fixture
def small_config():
    """Factory of FinetuneConfigs for a few quick steps with evaluation at the end; packing on."""
    return make_small_config


def make_small_config(**overrides):
    from llmcycle.train.finetune import FinetuneConfig

    data = {
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 6, "batch_size": 4, "lr": 5e-3, "warmup_steps": 0, "eval_every": 6,
                  "eval_batches": 4, "log_every": 2, "save_every": 2},
        "max_seq_len": 128,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return FinetuneConfig.model_validate(data)


@pytest.fixture
def one_line_error():
    return assert_one_line_error


def assert_one_line_error(code: int, err: str) -> str:
    """Assert the CLI failed the way user errors must: exit 2, one `error:` line, no traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]

