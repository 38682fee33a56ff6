"""The `finetune` stage: supervised fine-tuning of any HF causal LM on chat records (full, LoRA, DoRA, QLoRA).

Loss is on assistant tokens only, end-of-turn included (see `sft_data`), with padding-free packing (see
`batches.sft`). Training runs in the shared loop, so validation, early stopping, checkpoints and `--resume` work the
same as in pretraining. The output is a standard PEFT adapter dir (or a full model dir for `method: full`) plus the
tokenizer with the chat template it was trained with.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, List, Literal, Optional, Union

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import AutoConfig

from llmcycle.artifacts import open_artifact
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import ConfigError, ModelLoadError, first_line
from llmcycle.loading import load_base_model, resolve_dtype
from llmcycle.modeldir import context_length, end_of_turn_id
from llmcycle.modeldir.fim import FimConfig, ensure_fim_tokens, fim_on, fim_transform
from llmcycle.progress import say
from llmcycle.records import split_path
from llmcycle.train import setup
from llmcycle.train.batches.sft import batches, make_assistant_logits
from llmcycle.train.checkpoint import resume_point
from llmcycle.train.loop import LoopConfig, train_loop
from llmcycle.train.lora import count_parameters, quantization_config, require_cuda_for_qlora, wrap_with_adapter
from llmcycle.train.policy import prepare_tokenizer, resolve_base, save_policy
from llmcycle.train.setup import placed_by_loader
from llmcycle.train.sft_data import build_examples, check_against_generation_mask

Method = Literal["lora", "dora", "qlora", "full"]
TOKEN_BUDGET_SLACK = 2.0  # tokenize twice what the steps consume, so a run keeps drawing fresh conversations
PEFT_METHODS = ("lora", "dora", "qlora")


class LoraOptions(StageConfig):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[Literal["auto", "all-linear"], List[str]] = Field(
        "auto", description="auto = per-architecture defaults (all attention and MLP projections).")


class FinetuneLoopConfig(LoopConfig):
    """The loop's settings with defaults that suit adapter fine-tuning (higher lr than full training, no decay)."""

    max_steps: int = Field(100, ge=1)
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(5, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(20, ge=1)
    eval_batches: Optional[int] = Field(10, ge=1)
    log_every: int = Field(5, ge=1)
    save_every: int = Field(50, ge=1)


class FinetuneConfig(StageConfig):
    method: Method = "lora"
    lora: LoraOptions = Field(default_factory=LoraOptions)
    train: FinetuneLoopConfig = Field(default_factory=FinetuneLoopConfig)
    max_seq_len: int = Field(1024, ge=16, description="Tokens per sequence; longer chats are split at turns.")
    packing: bool = Field(True, description="Padding-free packing of several chats per row.")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Base weights dtype (auto: fp32 on CPU and for full; a frozen base in bf16/fp16 on GPU).")
    seed: int = Field(0, description="Data order and adapter init; also the loop's seed (overrides train.seed).")
    system_message: Literal["fold", "template"] = Field(
        "fold", description="When the chat template drops system messages: fold them into the first user turn "
        "(default) or leave them to the template (dropped).")
    train_split: str = "train"
    val_split: Optional[str] = Field("val", description="None = no validation (no early stopping).")
    max_train_records: Optional[int] = Field(None, ge=1)
    max_val_records: Optional[int] = Field(None, ge=1)
    fim: Optional[FimConfig] = Field(None, description="Fill-in-the-middle mix on the train split's assistant turns "
                                     "(None: off).")


def fit_sequence_length(cfg: FinetuneConfig, base: str) -> FinetuneConfig:
    """max_seq_len capped at the positions the base model has (a tiny pretrained base may have only 512)."""
    try:
        positions = context_length(AutoConfig.from_pretrained(base), default=0)
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a broken config
        raise ModelLoadError(f"{base}: model config does not load ({type(exc).__name__}: {first_line(exc)})") from None
    if positions and cfg.max_seq_len > positions:
        say(f"finetune: max_seq_len {cfg.max_seq_len} exceeds the base's {positions} positions; using {positions}")
        return cfg.model_copy(update={"max_seq_len": positions})
    return cfg


def load_examples(cfg: FinetuneConfig, tokenizer: Any, data_dir: str | Path):
    """Train and val examples. Every process tokenizes the same conversations (same seed) and the loop hands process
    r batches r, r+W, ...: the budget covers all W processes' steps, so each reads its own disjoint share."""
    loop = cfg.train
    row_tokens = loop.batch_size * cfg.max_seq_len
    world = setup.distributed_state().num_processes  # looked up on the module: tests stand in a world of 2
    # what the run can consume: its steps' rows on every process (plus slack: packing leaves rows part-empty), and
    # the val batches
    train_budget = int(TOKEN_BUDGET_SLACK * loop.max_steps * loop.grad_accum * row_tokens * world)
    val_budget = loop.eval_batches * row_tokens * world if loop.eval_batches is not None else None
    train, train_stats = build_examples(tokenizer, data_dir, cfg.train_split, cfg.max_seq_len, cfg.max_train_records,
                                        train_budget, sample_seed=cfg.seed,
                                        transform=fim_transform(cfg.fim, tokenizer))
    val, val_stats = ([], None)
    if cfg.val_split:
        val, val_stats = build_examples(tokenizer, data_dir, cfg.val_split, cfg.max_seq_len, cfg.max_val_records,
                                        val_budget)
    return train, val, {"train": vars(train_stats), "val": vars(val_stats) if val_stats else None}


def load_for_method(cfg: FinetuneConfig, base: str, tokenizer: Any):
    """The base model, loaded for the method (4-bit for QLoRA)."""
    on_gpu = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    device = "cpu"  # the loop moves the model to its device
    if cfg.method == "qlora":
        kwargs = {"quantization_config": quantization_config(resolve_dtype("auto", "cuda")), "device_map": {"": 0}}
        device = "cuda"
    # auto: a frozen base in bf16/fp16 on a GPU (adapters stay fp32); full training keeps fp32 master weights
    dtype = "fp32" if cfg.dtype == "auto" and cfg.method == "full" else cfg.dtype
    model = load_base_model(base, resolve_dtype(dtype, "cuda" if on_gpu else "cpu"), device, **kwargs)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ConfigError(f"{base}: tokenizer has {len(tokenizer)} tokens but the model only {rows} embeddings")
    model.config.use_cache = False
    return model


def attach_method(cfg: FinetuneConfig, model: Any):
    """Freeze the base and add adapters (lora/dora/qlora), or train every weight (full)."""
    torch.manual_seed(cfg.seed)
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    return wrap_with_adapter(model, cfg.method, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout,
                             cfg.lora.target_modules)


def check_method(cfg: FinetuneConfig) -> None:
    if cfg.method == "qlora":
        require_cuda_for_qlora()
    if cfg.method == "full" and cfg.lora != LoraOptions():
        say("finetune: method full ignores the lora section")


def run(cfg: FinetuneConfig, data_dir: str | Path, base: str | Path, out: str | Path, resume: bool = False) -> Path:
    """The `finetune` stage: DATA_DIR + BASE -> OUT (adapter dir, or a full model dir for method full)."""
    check_config(cfg)
    check_method(cfg)
    split_path(data_dir, cfg.train_split)
    if cfg.val_split:
        split_path(data_dir, cfg.val_split)
    if resume:
        resume_point(Path(out), "finetune")
    base_id = resolve_base(base)
    tokenizer, template_source = prepare_tokenizer(base_id, cfg.system_message)
    asked, cfg = cfg, fit_sequence_length(cfg, base_id)  # the manifest keeps what was asked (fingerprint)
    if fim_on(cfg.fim):
        ensure_fim_tokens(tokenizer, AutoConfig.from_pretrained(base_id).vocab_size, f"finetune {base_id}")
    train_examples, val_examples, stats = load_examples(cfg, tokenizer, data_dir)
    model = attach_method(cfg, load_for_method(cfg, base_id, tokenizer))
    with open_artifact(out, "finetune", to_dict(asked), {"data": data_dir, "base": base_id},
                       resumable=True, resume=resume) as art:
        result, (before, before_rows) = train(cfg, model, tokenizer, train_examples, val_examples, art.dir, resume)
        save_outputs(cfg, model, tokenizer, base_id, art.dir)
        art.metrics = result_metrics(result, before, before_rows)
        art.extra = describe(cfg, model, tokenizer, base_id, template_source, stats, data_dir)
    say(f"finetune: wrote {out} (val loss {fmt(before)} -> {fmt(result.val_loss)})")
    return Path(out)


def train(cfg: FinetuneConfig, model: Any, tokenizer: Any, train_examples, val_examples, work_dir: Path,
          resume: bool):
    """Run the shared loop on packed assistant-only batches; returns (LoopResult, (val loss before training, its
    batches' [summed loss, tokens]))."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    loop_cfg = cfg.train.model_copy(update={"seed": cfg.seed})

    def train_batches(epoch: int):
        return batches(train_examples, loop_cfg.batch_size, cfg.max_seq_len, cfg.packing, pad_id,
                       shuffle_seed=cfg.seed * 1_000_003 + epoch)

    def val_batches():
        if not val_examples:
            return None
        return batches(val_examples, loop_cfg.batch_size, cfg.max_seq_len, cfg.packing, pad_id, shuffle_seed=None)

    wrapped = place_for_training(make_assistant_logits(model))
    before = initial_val_loss(wrapped, val_batches, loop_cfg, work_dir, resume)
    result = train_loop(wrapped, train_batches, val_batches if val_examples else None, loop_cfg, work_dir,
                        resume=resume, desc=f"finetune ({cfg.method})")
    return result, before


def place_for_training(wrapped: Any) -> Any:
    """Put the model where the loop will train it (a 4-bit or device-mapped model is already there)."""
    return wrapped if placed_by_loader(wrapped.inner) else wrapped.to(setup.distributed_state().device)


def input_device(model: Any):
    """Where a model wants its inputs: its input embeddings' device (the first GPU of a device-mapped model)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return weight.device if weight is not None else next(model.parameters()).device


def initial_val_loss(wrapped: Any, val_batches, loop_cfg: LoopConfig, work_dir: Path, resume: bool
                     ) -> tuple[Optional[float], list[list[float]]]:
    """Val loss of the untouched base, so the manifest shows what fine-tuning gained (kept across resumes), and each
    val batch's [summed loss, tokens]: the same batches the loop validates on, so the change gets a paired
    interval. Batches go to the model's device: a QLoRA base lives on the GPU from loading on."""
    file = work_dir / "val_loss_before.json"
    if resume and file.is_file():
        saved = json.loads(file.read_text())
        return saved["val_loss"], saved.get("batches", [])
    source = val_batches()
    if source is None:
        return None, []
    total, count, device, rows = 0.0, 0, input_device(wrapped), []
    wrapped.eval()
    with torch.no_grad():
        for batch in itertools.islice(source, loop_cfg.eval_batches):
            inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items() if k != "labels"}
            logits = wrapped(**inputs).logits[0, :-1].float()
            targets = batch["labels"][0, 1:].to(logits.device)
            rows.append([float(F.cross_entropy(logits, targets, reduction="sum")), float(targets.numel())])
            total += rows[-1][0]
            count += int(targets.numel())
    wrapped.train()
    value = total / count if count else None
    file.write_text(json.dumps({"val_loss": value, "batches": rows}))
    return value, rows


def save_outputs(cfg: FinetuneConfig, model: Any, tokenizer: Any, base_id: str, work_dir: Path) -> None:
    """The adapter (PEFT methods) or the full model, and the tokenizer (`policy.save_policy`)."""
    save_policy(model, tokenizer, base_id, work_dir, adapter=cfg.method in PEFT_METHODS)


def result_metrics(result: Any, before: Optional[float], before_rows: list[list[float]] = ()) -> dict[str, Any]:
    """The manifest's metrics; `val_loss_batches` and `val_loss_before_batches` ([summed loss, tokens] per val batch)
    are what the run report's intervals around the two val losses and their change need."""
    return {
        "steps": result.steps, "tokens": result.tokens, "train_loss": result.train_loss,
        "val_loss_before": before, "val_loss": result.val_loss, "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early, "stopped_by_time_budget": result.budget_spent, "seconds": round(result.seconds, 2),
        "tokens_per_s": round(result.tokens_per_s, 1), "mfu": result.mfu,
        "val_loss_batches": result.val_rows, "val_loss_before_batches": list(before_rows),
    }


def describe(cfg: FinetuneConfig, model: Any, tokenizer: Any, base_id: str, template_source: str,
             stats: dict[str, Any], data_dir: str | Path) -> dict[str, Any]:
    """What the manifest says about this run besides config and metrics."""
    info: dict[str, Any] = {
        "method": cfg.method, "base": base_id, "chat_template": template_source,
        "eos_token": tokenizer.eos_token, "end_of_turn_token": tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer)), "max_seq_len_used": cfg.max_seq_len, "data": stats, **count_parameters(model),
        "label_mask": check_against_generation_mask(tokenizer, data_dir, cfg.train_split),
    }
    if cfg.method in PEFT_METHODS:
        targets = model.peft_config["default"].target_modules
        info["target_modules"] = sorted(targets) if isinstance(targets, (set, list)) else targets
    return info


def fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def check_config(cfg: FinetuneConfig) -> FinetuneConfig:
    if cfg.val_split is not None and cfg.val_split == cfg.train_split:
        raise ConfigError("finetune.val_split: must differ from train_split")
    return cfg
