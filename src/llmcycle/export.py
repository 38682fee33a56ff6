"""The `export` stage (`llmcycle export`): a model dir (full, merged, or an adapter dir merged on the fly) ->
OUT/model.gguf with a manifest. The file format and quantization are `llmcycle.gguf`'s."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from llmcycle.artifacts import open_artifact
from llmcycle.gguf import GGUFError
from llmcycle.gguf.export import GGUF_FILE, check_quant, write_gguf
from llmcycle.gguf.tensors import check_exportable
from llmcycle.loading import adapter_base, check_exists, is_adapter_dir, load_model, load_tokenizer_for, resolve
from llmcycle.progress import say


def export_gguf(model_dir: str | Path, out_dir: str | Path, quant: str = "f16") -> Path:
    """The `export` stage: MODEL_DIR -> OUT_DIR/model.gguf (+ manifest). Returns the GGUF file's path."""
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
