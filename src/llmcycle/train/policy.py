"""The policy a training method starts from and what it leaves behind, shared by every method.

- `resolve_base`: a local base as an absolute path (an adapter records it to find its base again), else a hub id.
- `prepare_tokenizer`: the base's tokenizer with a usable chat template (`modeldir.prepare_template` decides which).
- `load_policy`: a full chat model to align: LoRA on a frozen base, or every weight trainable (fp32).
- `save_policy`: an adapter dir that records its base, or a full model dir with its generation config; plus the
  tokenizer either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llmcycle.errors import ConfigError
from llmcycle.loading import check_exists, is_adapter_dir, load_base_model, load_tokenizer_for, resolve
from llmcycle.modeldir import prepare_template, write_generation_config
from llmcycle.train.lora import wrap_with_adapter


def resolve_base(base: str | Path) -> str:
    """A local dir as an absolute path (what an adapter must record to find its base again), else the hub id."""
    path = Path(resolve(base)).expanduser()  # a .gguf file or named GGUF base: its imported dir
    return str(path.resolve()) if path.exists() else str(path)


def prepare_tokenizer(base: str, system: str = "fold") -> tuple[Any, str]:
    """The base's tokenizer with a usable chat template, and where that template came from."""
    check_exists(base)
    tokenizer = load_tokenizer_for(base)
    return tokenizer, prepare_template(tokenizer, base, system)


def load_policy(cfg: Any, base: str, tokenizer: Any) -> Any:
    """The model to align (`cfg`: an AlignConfig's tuning, lora and seed): LoRA on a frozen base, or every weight
    trainable (fp32)."""
    if is_adapter_dir(base):
        raise ConfigError(f"{base}: is an adapter dir; align a full model (merge it first: llmcycle merge)")
    model = load_base_model(base, "fp32", "cpu")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        raise ConfigError(f"{base}: tokenizer has more tokens than the model has embeddings")
    model.config.use_cache = False
    torch.manual_seed(cfg.seed)
    if cfg.tuning == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    return wrap_with_adapter(model, "lora", cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)


def save_policy(model: Any, tokenizer: Any, base_id: str, work_dir: Path, adapter: bool) -> None:
    """An adapter dir that records its base (absolute path for local dirs), or a full model dir; plus the tokenizer."""
    if adapter:
        model.peft_config["default"].base_model_name_or_path = base_id
        model.save_pretrained(work_dir, save_embedding_layers=False)
    else:
        model.config.use_cache = True
        model.save_pretrained(work_dir)
        write_generation_config(work_dir, tokenizer, model, base=base_id)
    tokenizer.save_pretrained(work_dir)
