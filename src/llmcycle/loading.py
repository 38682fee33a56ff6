"""Load any HF causal LM: a hub id, a local `save_pretrained` dir, or a PEFT adapter dir on top of its base.

One place for it, so finetune, merge, eval, chat and serve load models the same way and fail with the same
one-line errors.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

from llmcycle.building import BUILD_LOCK
from llmcycle.errors import ModelLoadError, first_line
from llmcycle.gguf.resolve import resolve as resolve_gguf
from llmcycle.progress import quiet

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter dir was trained on (its `base_model_name_or_path`)."""
    file = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{file}: unreadable adapter config ({exc})") from None
    if not base:
        raise ModelLoadError(f"{file}: adapter config names no base_model_name_or_path")
    return str(base)


def resolve(name_or_path: str | Path) -> str:
    """A `.gguf` file or a named GGUF base (e.g. smollm2-135m-instruct) -> its imported HF dir; else unchanged."""
    return resolve_gguf(name_or_path)


# A hub id: `gpt2`, `distilgpt2`, `owner/name`; letters, digits, `.`, `_`, `-`, neither `--` nor `..` inside.
HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
HUB_HINT = "check the name, pass a local model dir, or set HF_HUB_OFFLINE=1 to load from the local cache only"
PROBE_TIMEOUT_S = 10.0


def is_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text)) and not text.endswith((".", "-"))


def check_exists(name_or_path: str | Path, what: str = "model") -> None:
    """A path-looking argument that does not exist is a user error, not a hub lookup; a hub id that the hub (or,
    offline, the cache) does not have fails here in one line, before transformers retries for a minute."""
    text = resolve(name_or_path)
    if Path(text).expanduser().exists():
        return
    if text.startswith((".", "/", "~")) or not is_hub_id(text):
        raise ModelLoadError(f"{text}: no such {what} dir (and not a hub id such as gpt2 or owner/name)")
    hub_files(text)


@functools.lru_cache(maxsize=64)
def hub_files(repo_id: str) -> dict[str, Any]:
    """How to load a hub id: `{}` (from the hub), or `{"local_files_only": True}` when the hub cannot be reached
    and the cache holds the model. One quick request decides, once per id and process."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    cached = isinstance(try_to_load_from_cache(repo_id, "config.json"), str) or \
        isinstance(try_to_load_from_cache(repo_id, "tokenizer_config.json"), str)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE:
        if cached:
            return {"local_files_only": True}
        raise ModelLoadError(f"{repo_id}: not a local dir, and not in the hub cache while HF_HUB_OFFLINE is set "
                             f"({HUB_HINT.replace(', or set HF_HUB_OFFLINE=1 to load from the local cache only', '')}"
                             ", or unset HF_HUB_OFFLINE to download it)")
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    try:
        HfApi(endpoint=endpoint).model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return {}  # it exists; transformers says what access it needs
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{repo_id}: not a local dir, and no such model on the Hugging Face hub (or a private "
                             f"one: log in with `hf auth login`); check the name or pass a local model dir") from None
    except Exception as exc:  # no network: DNS, refused, timeout, proxy
        if cached:
            return {"local_files_only": True}
        raise ModelLoadError(f"{repo_id}: not a local dir, and the Hugging Face hub at {endpoint} cannot be reached "
                             f"({type(exc).__name__}: {first_line(exc, 80)}); {HUB_HINT}") from None
    return {}


def resolve_dtype(dtype: str | Any, device: str = "cpu"):
    """'auto' -> bf16 on CUDA with bf16 support, fp16 on other CUDA, fp32 on CPU."""
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        if str(device).startswith("cuda") and torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r} (use auto, fp32, bf16 or fp16)")
    return table[dtype]


def load_base_model(name_or_path: str | Path, dtype: str | Any = "auto", device: str = "cpu", **kwargs: Any):
    """AutoModelForCausalLM.from_pretrained with a clear error; extra kwargs (e.g. quantization_config) pass on."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    name_or_path = resolve(name_or_path)
    check_exists(name_or_path)
    if not Path(str(name_or_path)).expanduser().exists():
        kwargs = {**hub_files(str(name_or_path)), **kwargs}
    if quiet():
        hf_logging.disable_progress_bar()
    try:
        with BUILD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=resolve_dtype(dtype, device),
                                                         **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... here
        raise ModelLoadError(f"{name_or_path}: model does not load ({type(exc).__name__}: {first_line(exc)})") from None
    if "device_map" not in kwargs and "quantization_config" not in kwargs:
        model.to(device)
    return model


def load_model(name_or_path: str | Path, dtype: str | Any = "auto", device: str = "cpu", merge: bool = False,
               **kwargs: Any):
    """A full model, or base + adapter for an adapter dir (merged into plain weights when `merge`)."""
    if not is_adapter_dir(name_or_path):
        return load_base_model(name_or_path, dtype, device, **kwargs)
    from peft import PeftModel

    base_name = adapter_base(name_or_path)
    try:
        check_exists(base_name)
    except ModelLoadError:
        raise ModelLoadError(f"{name_or_path}: the adapter's base model {base_name} is missing") from None
    base = load_base_model(base_name, dtype, device, **kwargs)
    try:
        with BUILD_LOCK:
            model = PeftModel.from_pretrained(base, str(name_or_path))
    except Exception as exc:
        raise ModelLoadError(
            f"{name_or_path}: adapter does not load ({type(exc).__name__}: {first_line(exc)})") from None
    return model.merge_and_unload() if merge else model


def load_tokenizer(path: str | Path):
    """AutoTokenizer from a dir or hub id, with a one-line error if it does not load."""
    from transformers import AutoTokenizer

    check_exists(path, "tokenizer")
    hub = {} if Path(str(path)).expanduser().exists() else hub_files(str(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **hub)
    except Exception as exc:  # transformers raises many types here
        raise ModelLoadError(f"{path}: tokenizer does not load ({type(exc).__name__}: {first_line(exc)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer_for(name_or_path: str | Path):
    """The tokenizer saved with a model or adapter dir, else the adapter's base's tokenizer."""
    name_or_path = resolve(name_or_path)
    path = Path(str(name_or_path))
    if path.is_dir() and not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        if is_adapter_dir(path):
            return load_tokenizer(adapter_base(path))
        raise ModelLoadError(f"{path}: has no tokenizer files")
    return load_tokenizer(name_or_path)

