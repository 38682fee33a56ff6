"""The prune stage as a function: MODEL_DIR (+ DATA_DIR for calibration or healing) -> OUT, an ordinary HF dir.

Everything that can be refused (a sparsity or pattern the shapes cannot take, a missing data dir) is refused before
the weights load and before anything is written; OUT appears only complete (written in OUT.partial, then renamed).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from llmcycle.artifacts import open_artifact
from llmcycle.config import to_dict
from llmcycle.errors import ConfigError, ModelLoadError, first_line
from llmcycle.gguf.resolve import resolve
from llmcycle.loading import check_exists, load_model, load_tokenizer_for
from llmcycle.progress import say
from llmcycle.prune.calibrate import calibration_texts, decoder_linears, input_norms, layer_influence, token_batches
from llmcycle.prune.config import PruneConfig
from llmcycle.prune.masks import apply_masks, check_nm_shapes
from llmcycle.prune.structured import Plan, plan, prune_structured

SAVE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def model_config(model_dir: Path) -> Any:
    from transformers import AutoConfig

    check_exists(model_dir)
    try:
        return AutoConfig.from_pretrained(str(model_dir))
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a broken config
        raise ModelLoadError(f"{model_dir}: model config does not load ({type(exc).__name__}: {first_line(exc)})") \
            from None


def check_inputs(cfg: PruneConfig, config: Any, data_dir: Path | None, where: str) -> Plan | None:
    """Everything decidable from the config and paths; returns the structured plan (None for masks)."""
    if cfg.method == "wanda" and data_dir is None:
        raise ConfigError(f"{where}: method wanda needs calibration text: give a data dir (or method: magnitude)")
    if cfg.heal_steps and data_dir is None:
        raise ConfigError(f"{where}: heal_steps needs a data dir to fine-tune on")
    if (cfg.heads or cfg.layers) and cfg.pattern != "structured":
        raise ConfigError(f"{where}: heads and layers apply to pattern structured only (pattern is {cfg.pattern})")
    if cfg.layers and data_dir is None:
        raise ConfigError(f"{where}: layers are chosen by their influence on calibration text: give a data dir")
    if cfg.heal_steps and cfg.pattern != "structured":
        raise ConfigError(f"{where}: healing would refill the zeroed weights; heal_steps is for pattern structured")
    if cfg.pattern == "structured":
        return plan(config, cfg.sparsity, cfg.heads, cfg.channel_multiple, where, cfg.layers)
    return None


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model: Any, tokenizer: Any, out: Path, config: Any) -> None:
    """Weights in the source's own dtype (bf16 stays bf16), tokenizer and generation config beside them."""
    dtype = SAVE_DTYPES.get(str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", "")).split(".")[-1])
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def prune_in_place(cfg: PruneConfig, model: Any, tokenizer: Any, data_dir: Path | None, p: Plan | None,
                   where: str) -> dict[str, Any]:
    linears = decoder_linears(model)
    nm = cfg.n_m()
    if nm:
        check_nm_shapes(linears, nm[1], where)
    norms, influence, batches = None, None, None
    if cfg.method == "wanda" or (p is not None and p.drop_layers):
        texts = calibration_texts(data_dir, cfg.calibration_split, cfg.calibration_samples)
        torch.manual_seed(cfg.seed)
        batches = token_batches(tokenizer, texts, cfg.calibration_length)
    if cfg.method == "wanda":
        norms = input_norms(model, batches)
    if p is not None and p.drop_layers:
        influence = layer_influence(model, batches)
    if p is not None:
        return prune_structured(model, p, norms, influence)
    return apply_masks(linears, norms, cfg.sparsity, nm)


def run(cfg: PruneConfig, model_dir: str | Path, data_dir: str | Path | None, out: str | Path) -> Path:
    """The `prune` stage: MODEL_DIR (an HF dir, or a GGUF file or named GGUF base, imported once) -> OUT (pruned HF
    model dir + manifest). Returns OUT."""
    model_dir, out = Path(resolve(model_dir)), Path(out)
    data_dir = Path(data_dir) if data_dir is not None else None
    where = f"prune {cfg.pattern}"
    config = model_config(model_dir)
    p = check_inputs(cfg, config, data_dir, where)
    if data_dir is not None and (cfg.method == "wanda" or cfg.layers):
        calibration_texts(data_dir, cfg.calibration_split, 1)  # a bad data dir fails before the weights load
    model = load_model(model_dir, dtype="fp32").eval()
    tokenizer = load_tokenizer_for(model_dir)
    before = parameter_count(model)
    # an N:M shape problem is found here, on the loaded layers, still before anything is written
    changes = prune_in_place(cfg, model, tokenizer, data_dir, p, where)
    inputs = {"model": model_dir, **({"data": data_dir} if data_dir is not None else {})}
    with open_artifact(out, "prune", to_dict(cfg), inputs) as art:
        healing = None
        if cfg.heal_steps:
            model, healing = heal_model(model, tokenizer, config, data_dir, cfg, out, model_dir)
        save_model(model, tokenizer, art.dir, config)
        after = parameter_count(model)
        art.metrics = {"params_before": before, "params_after": after, "param_ratio": round(after / before, 4),
                       "target_sparsity": cfg.target_sparsity(), **changes,
                       "size_mb": round(sum(f.stat().st_size for f in art.dir.glob("*.safetensors")) / 2**20, 2),
                       **({"heal": healing} if healing else {})}
    say(f"prune: wrote {out} ({cfg.pattern}, {cfg.method}; {before:,} -> {after:,} parameters)")
    return out


def heal_model(model: Any, tokenizer: Any, config: Any, data_dir: Path, cfg: PruneConfig, out: Path,
               original: Path) -> tuple[Any, dict]:
    """The pruned model saved to a scratch dir, LoRA-healed on DATA_DIR (taught by ORIGINAL, the unpruned model,
    under the default objective), merged (see `llmcycle.prune.heal`); with the heal's metrics."""
    from llmcycle.prune.heal import heal  # lazy: healing pulls in transformers and peft; most prunes skip it

    with tempfile.TemporaryDirectory(prefix=f".{out.name}.heal-", dir=out.parent) as scratch:
        unhealed = Path(scratch) / "pruned"
        save_model(model, tokenizer, unhealed, config)
        return heal(unhealed, data_dir, cfg, Path(scratch), original)
