"""Writing a GGUF file: a loaded model and its tokenizer -> one file llama.cpp runs (the `export` stage,
`llmcycle.export`, loads the model and calls `write_gguf`).

Quantization follows llama.cpp's habits: norms and biases stay f32; for q4_0 the output head (or the tied
embedding that serves as one) is q8_0, since 4-bit logits cost the most quality; a matrix whose rows do not split
into 32-value blocks falls back to f16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmcycle.errors import ConfigError
from llmcycle.gguf import QUANTS
from llmcycle.gguf.tensors import check_exportable, gguf_tensors, write_hparams
from llmcycle.gguf.vocab import gguf_vocab, write_vocab

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
    import gguf  # heavy: only writers and readers of GGUF files need it

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
