"""`llmcycle export`: a model dir (full, merged, or an adapter dir merged on the fly) -> OUT/model.gguf.

Quantization follows llama.cpp's habits: norms and biases stay f32; for q4_0 the output head (or the tied
embedding that serves as one) is q8_0, since 4-bit logits cost the most quality; a matrix whose rows do not split
into 32-value blocks falls back to f16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmcycle.artifacts import open_artifact
from llmcycle.errors import ConfigError
from llmcycle.gguf import QUANTS, GGUFError
from llmcycle.progress import say

GGUF_FILE = "model.gguf"


def _types():
    from gguf import GGMLQuantizationType as T
    from gguf import LlamaFileType as F

    return {"f32": (T.F32, F.ALL_F32), "f16": (T.F16, F.MOSTLY_F16), "q8_0": (T.Q8_0, F.MOSTLY_Q8_0),
            "q4_0": (T.Q4_0, F.MOSTLY_Q4_0)}


def check_quant(quant: str) -> None:
    if quant not in QUANTS:
        raise ConfigError(f"quant: unknown quant type {quant!r} (use {', '.join(QUANTS)})")


def encode_tensor(name: str, w: np.ndarray, quant: str, tied: bool) -> tuple[np.ndarray, Any]:
    """The bytes (or array) written for one tensor and its GGML type."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    qtype = _types()[quant][0]
    if w.ndim <= 1 or name.endswith("_norm.weight") or qtype == T.F32:
        return w.astype(np.float32), T.F32
    if quant == "q4_0" and (name == "output.weight" or (tied and name == "token_embd.weight")):
        qtype = T.Q8_0
    if qtype == T.F16:
        return w.astype(np.float16), T.F16
    try:
        return quants.quantize(w.astype(np.float32), qtype), qtype
    except quants.QuantError:
        return w.astype(np.float16), T.F16


def write_gguf(path: Path, model: Any, tokenizer: Any, quant: str, name: str) -> dict[str, int]:
    """Write model + tokenizer as one GGUF file; returns the count of tensors per GGML type."""
    import gguf

    from llmcycle.gguf.tensors import check_exportable, gguf_tensors, write_hparams
    from llmcycle.gguf.vocab import gguf_vocab, write_vocab

    config = model.config
    arch = check_exportable(config, name)
    vocab = gguf_vocab(tokenizer, int(config.vocab_size), getattr(model, "generation_config", None), name)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(int(_types()[quant][1]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_hparams(writer, config)
    write_vocab(writer, vocab)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    counts: dict[str, int] = {}
    for tname, w in gguf_tensors(model.state_dict(), config, arch):
        data, qtype = encode_tensor(tname, w, quant, tied)
        writer.add_tensor(tname, data, raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return counts


def export_gguf(model_dir: str | Path, out_dir: str | Path, quant: str = "f16") -> Path:
    """The `export` stage: MODEL_DIR -> OUT_DIR/model.gguf (+ manifest). Returns the GGUF file's path."""
    from transformers import AutoConfig

    from llmcycle.gguf.tensors import check_exportable
    from llmcycle.loading import adapter_base, check_exists, is_adapter_dir, load_model, load_tokenizer_for, resolve

    check_quant(quant)
    check_exists(model_dir)
    source = resolve(str(model_dir))
    config_dir = resolve(adapter_base(source)) if is_adapter_dir(source) else source
    try:
        config = AutoConfig.from_pretrained(config_dir)
    except Exception as exc:
        raise GGUFError(f"{config_dir}: no readable config.json ({type(exc).__name__})") from None
    check_exportable(config, str(model_dir))  # refuse before loading any weights
    with open_artifact(out_dir, "export", {"format": "gguf", "quant": quant}, {"model": model_dir}) as art:
        say(f"export: {model_dir} -> {Path(out_dir) / GGUF_FILE} ({quant})")
        model = load_model(source, dtype="fp32", merge=True).eval()
        tokenizer = load_tokenizer_for(source)
        counts = write_gguf(art.dir / GGUF_FILE, model, tokenizer, quant, Path(str(model_dir)).name)
        art.metrics = {"quant": quant, "tensor_types": counts,
                       "size_mb": round((art.dir / GGUF_FILE).stat().st_size / 2**20, 2)}
    return Path(out_dir) / GGUF_FILE
