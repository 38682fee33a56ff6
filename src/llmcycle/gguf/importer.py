"""`llmcycle import FILE.gguf --out DIR`: any supported GGUF -> an ordinary Hugging Face model dir.

transformers' GGUF loader does the dequantizing; we then correct what it gets wrong against the file's own
metadata: the pre-tokenizer (it drops SmolLM2's digit split, so "\\n\\n  12" tokenized differently from
llama.cpp), the end-of-turn id (the template's `<|im_end|>` must stop generation, not only the file's EOS),
add_bos, the context length as the tokenizer's limit, and the quantizer handle that blocks `save_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmcycle.artifacts import open_artifact
from llmcycle.building import BUILD_LOCK
from llmcycle.errors import first_line
from llmcycle.gguf import GGUFError
from llmcycle.gguf.reader import GGUFInfo, read_gguf
from llmcycle.gguf.vocab import PRE_TOKENIZERS, end_ids, pre_name, set_pre_tokenizer
from llmcycle.progress import say


def load_from_gguf(info: GGUFInfo) -> tuple[Any, Any]:
    """Model (fp32, dequantized) and tokenizer from a checked GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where, name = str(info.path.parent), info.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        with BUILD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds here
        raise GGUFError(f"{info.path}: does not load ({type(exc).__name__}: {first_line(exc)})") from None
    model.hf_quantizer = None  # the weights are plain fp32 now; the handle only blocks save_pretrained
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def fix_tokenizer(tokenizer: Any, info: GGUFInfo) -> list[str]:
    """Make the HF tokenizer match the GGUF metadata; returns what was changed (for the manifest)."""
    fixes: list[str] = []
    pre = str(info.get("tokenizer.ggml.pre", "default"))
    if pre in PRE_TOKENIZERS:
        current = pre_name_or_none(json.loads(tokenizer.backend_tokenizer.to_str()))
        if current != pre and set_pre_tokenizer(tokenizer, pre):
            fixes.append(f"pre-tokenizer set to llama.cpp's {pre!r}")
    template = info.get("tokenizer.chat_template")
    if isinstance(template, str) and tokenizer.chat_template != template:
        tokenizer.chat_template = template
        fixes.append("chat template taken from the GGUF")
    context = info.get(f"{info.arch}.context_length")
    if context:
        tokenizer.model_max_length = int(context)
    return fixes


def pre_name_or_none(tokenizer_json: dict[str, Any]) -> str | None:
    try:
        return pre_name(tokenizer_json, "")
    except GGUFError:
        return None


def fix_generation(model: Any, tokenizer: Any, info: GGUFInfo) -> None:
    """generation_config stops at the end-of-turn token and at EOS; pad and bos from the GGUF."""
    eos_file = info.get("tokenizer.ggml.eos_token_id")
    if eos_file is not None and tokenizer.eos_token_id is None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos_file))
    eot, eos = end_ids(tokenizer, model.generation_config)
    file_eot = info.get("tokenizer.ggml.eot_token_id")
    ids = [int(i) for i in (file_eot, eot, eos, eos_file) if i is not None]
    gen = model.generation_config
    gen.eos_token_id = list(dict.fromkeys(ids))
    pad = info.get("tokenizer.ggml.padding_token_id", tokenizer.pad_token_id)
    if pad is not None:
        gen.pad_token_id = int(pad)
        model.config.pad_token_id = int(pad)
    bos = info.get("tokenizer.ggml.bos_token_id")
    if bos is not None:
        gen.bos_token_id = int(bos)


def import_gguf(file: str | Path, out: str | Path) -> Path:
    """The `import` stage: FILE.gguf -> OUT (safetensors, tokenizer, chat template, generation config)."""
    info = read_gguf(file)
    with open_artifact(out, "import", {"file": info.path.name}, {"gguf": info.path}) as art:
        say(f"import: {info.path} ({info.arch}, {info.n_tensors} tensors: "
            f"{', '.join(f'{n} {k}' for k, n in info.tensor_types.items())}) -> {out}")
        model, tokenizer = load_from_gguf(info)
        fixes = fix_tokenizer(tokenizer, info)
        fix_generation(model, tokenizer, info)
        model.save_pretrained(art.dir)
        tokenizer.save_pretrained(art.dir)
        art.metrics = {"architecture": info.arch, "parameters": sum(p.numel() for p in model.parameters()),
                       "gguf_tensor_types": info.tensor_types}
        art.extra = {"gguf": {"name": info.get("general.name"), "pre_tokenizer": info.get("tokenizer.ggml.pre"),
                              "fixes": fixes}}
    return Path(out)
