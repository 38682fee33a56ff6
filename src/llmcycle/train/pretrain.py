"""The `pretrain` stage: next-token prediction on packed data, from scratch (a named preset) or from any HF causal LM
(`init_from`, continued pretraining). Writes BASE_DIR: a `save_pretrained` model, tokenizer files,
generation_config.json, metrics.jsonl, loss.png, samples.json, manifest.json, and checkpoints/ for `--resume`.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from llmcycle.artifacts import atomic_write_json, open_artifact, partial_dir
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import ConfigError
from llmcycle.loading import load_base_model, load_tokenizer_for
from llmcycle.modeldir import stop_token_ids, write_generation_config
from llmcycle.models import build_model, get_preset
from llmcycle.progress import say
from llmcycle.records import split_path
from llmcycle.loading import load_tokenizer
from llmcycle.modeldir import BOS, ensure_chat_template
from llmcycle.modeldir.fim import FIM_TOKENS, FimConfig, ensure_fim_tokens, fim_on, fim_transform
from llmcycle.train.checkpoint import resume_point
from llmcycle.train.loop import LoopConfig, distributed_state, train_loop
from llmcycle.train.packing import (PackedSplit, hold_out, load_packed, train_batches_fn, unigram_loss,
                                    val_batches_fn)

SAMPLE_PROMPTS = ["Hi! How are you doing today?", "What do you like to do on the weekend?"]


class PretrainLoopConfig(LoopConfig):
    """The loop's settings with defaults that suit pretraining a small model from scratch. Measured: the `default`
    preset at seq_len 128 takes ~0.42 s per step on 2 idle cores, so 550 steps are ~4 minutes of training."""

    max_steps: int = Field(550, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(40, ge=0)
    eval_every: int = Field(100, ge=1)
    eval_batches: Optional[int] = Field(10, ge=1)
    save_every: int = Field(100, ge=1)


class PretrainConfig(StageConfig):
    preset: str = Field("default", description="Model preset (llmcycle.models.PRESETS) when not init_from.")
    init_from: Optional[str] = Field(None, description="Continue pretraining this HF causal LM (hub id or dir).")
    seq_len: int = Field(128, ge=8, description="Tokens per packed row.")
    seed: int = Field(0, description="Seeds model init, data order and the loop (overrides train.seed).")
    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="Held out from train when there is no val split.")
    final_eval_rows: int = Field(512, ge=1, description="Val rows scored at the end (model and unigram).")
    sample_tokens: int = Field(40, ge=0, description="Greedy tokens per sample written to samples.json.")
    train: PretrainLoopConfig = Field(default_factory=PretrainLoopConfig)
    fim: Optional[FimConfig] = Field(None, description="Fill-in-the-middle mix on the train split (None: off).")


def run(cfg: PretrainConfig, data_dir: str | Path, tokenizer_dir: str | Path | None, out: str | Path,
        resume: bool = False) -> Path:
    """DATA_DIR + TOK_DIR -> BASE_DIR. Under `accelerate launch` every process trains; the main one writes."""
    out = Path(out)
    split_path(data_dir, "train")
    if resume:
        resume_point(out, "pretrain")
    tokenizer = _load_tokenizer(cfg, tokenizer_dir)
    if fim_on(cfg.fim) and cfg.init_from is None:  # a model built here gets a row for every token
        ensure_fim_tokens(tokenizer, len(tokenizer) + len(FIM_TOKENS), "pretrain")
    model = _load_model(cfg, tokenizer)
    if fim_on(cfg.fim):
        ensure_fim_tokens(tokenizer, model.get_input_embeddings().num_embeddings, f"pretrain {cfg.init_from}")
    if cfg.seq_len > model.config.max_position_embeddings:
        raise ConfigError(f"seq_len: {cfg.seq_len} is above the model's maximum of "
                          f"{model.config.max_position_embeddings} positions")
    train, val = _load_data(cfg, data_dir, tokenizer)
    inputs = {"data": data_dir, **({"tokenizer": tokenizer_dir} if tokenizer_dir else {}),
              **({"init_from": cfg.init_from} if cfg.init_from else {})}
    state = distributed_state()
    if state.num_processes == 1 and os.environ.get("ACCELERATE_USE_CPU") and os.environ.get("MASTER_ADDR"):
        say("pretrain: note: `accelerate launch --cpu` starts one process unless mpirun is set up; for several CPU "
            "processes use `accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`")
    if not state.is_main_process:
        state.wait_for_everyone()  # the main process has prepared OUT.partial
        _train(cfg, model, train, val, partial_dir(out), resume)
        return out
    with open_artifact(out, "pretrain", to_dict(cfg), inputs, resumable=True, resume=resume) as art:
        state.wait_for_everyone()
        result = _train(cfg, model, train, val, art.dir, resume)
        art.metrics = _final_metrics(cfg, model, tokenizer, train, val, result)
        art.extra = {"samples": _save_outputs(cfg, model, tokenizer, art.dir)}
        say(f"pretrain: val ppl {art.metrics['val_perplexity']:.2f} vs unigram "
            f"{art.metrics['unigram_val_perplexity']:.2f}; {art.metrics['tokens_per_s']:.0f} tokens/s, "
            f"MFU {100 * art.metrics['mfu']:.1f}%")
    return out


def _load_tokenizer(cfg: PretrainConfig, tokenizer_dir):
    if tokenizer_dir is None:
        if cfg.init_from is None:
            raise ConfigError("pretrain needs --tokenizer (or --init-from a model that has one)")
        tokenizer = load_tokenizer_for(cfg.init_from)
    else:
        tokenizer = load_tokenizer(tokenizer_dir)
    return ensure_chat_template(tokenizer)


def _load_model(cfg: PretrainConfig, tokenizer):
    if cfg.init_from is None:
        get_preset(cfg.preset)
        return build_model(cfg.preset, tokenizer, seed=cfg.seed)
    model = load_base_model(cfg.init_from, dtype="fp32")
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:  # the chat tokens we added to a base without a chat template: trained from here on
        say(f"pretrain: {cfg.init_from} has no chat template; added llmcycle's chat tokens and resized its "
            f"embeddings from {rows} to {len(tokenizer)} rows")
        model.resize_token_embeddings(len(tokenizer))
    return model


def _load_data(cfg: PretrainConfig, data_dir, tokenizer) -> tuple[PackedSplit, PackedSplit]:
    train = load_packed(data_dir, "train", tokenizer, cfg.seq_len, fim_transform(cfg.fim, tokenizer))
    if (Path(data_dir) / "val.jsonl").is_file():
        val = load_packed(data_dir, "val", tokenizer, cfg.seq_len)
    else:
        train, val = hold_out(train, cfg.val_fraction)
    say(f"pretrain: {train.rows.shape[0]} train rows x {cfg.seq_len} tokens ({train.documents} documents), "
        f"{val.rows.shape[0]} val rows")
    return train, val


def _train(cfg: PretrainConfig, model, train: PackedSplit, val: PackedSplit, work: Path, resume: bool):
    loop = cfg.train.model_copy(update={"seed": cfg.seed})
    return train_loop(model, train_batches_fn(train.rows, loop.batch_size, cfg.seed),
                      val_batches_fn(val.rows, loop.batch_size), loop, work, resume=resume, desc="pretrain")


def final_val_batches(model, rows, batch_size: int) -> list[list[float]]:
    """Each batch's [summed cross-entropy, tokens] of the model on `rows` (every token but each row's first): their
    ratio of sums is the token-mean val loss, and the batches are what an interval around it resamples."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, rows.shape[0], batch_size):
            ids = rows[start:start + batch_size].to(model.device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            out.append([float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                              reduction="sum")), float(ids[:, 1:].numel())])
    return out


def _final_metrics(cfg, model, tokenizer, train: PackedSplit, val: PackedSplit, result) -> dict[str, Any]:
    rows = val.rows[: cfg.final_eval_rows]
    batches = final_val_batches(model, rows, cfg.train.batch_size)
    val_loss = sum(b[0] for b in batches) / sum(b[1] for b in batches)
    uni = unigram_loss(train.rows, rows, model.get_input_embeddings().weight.shape[0])
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "train_loss": result.train_loss, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50)),
        "unigram_val_loss": uni, "unigram_val_perplexity": math.exp(min(uni, 50)),
        "val_tokens_scored": int(rows[:, 1:].numel()), "steps": result.steps, "tokens_seen": result.tokens,
        "tokens_per_s": result.tokens_per_s, "mfu": result.mfu, "matmul_peak_gflops": result.peak_flops / 1e9,
        "params": n_params, "train_seconds": result.seconds, "stopped_early": result.stopped_early,
        "stopped_by_time_budget": result.budget_spent, "stopped_by_run_deadline": result.cut_by_deadline,
        "val_loss_batches": batches,
    }


def _save_outputs(cfg: PretrainConfig, model, tokenizer, out: Path) -> list[dict[str, str]]:
    # the end of a document (BOS/<|endoftext|>) stops a base model's generation too, and pads
    document_end = tokenizer.convert_tokens_to_ids(BOS) if BOS in tokenizer.get_vocab() else None
    pad = document_end if document_end is not None else tokenizer.pad_token_id
    eos = stop_token_ids(tokenizer, None, [document_end] if document_end is not None else [])
    model.config.eos_token_id, model.config.pad_token_id = eos[0], pad
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    gen = write_generation_config(out, tokenizer, None, extra_stop=eos, pad=pad)
    gen = copy.deepcopy(gen)
    gen.max_new_tokens, gen.do_sample = cfg.sample_tokens, False
    samples = greedy_samples(model, tokenizer, gen, cfg.sample_tokens)
    atomic_write_json(out / "samples.json", samples)
    return samples


def greedy_samples(model, tokenizer, gen_config, max_new_tokens: int) -> list[dict[str, str]]:
    """Greedy continuations of a few chat prompts: a quick look at what the base model learned."""
    if max_new_tokens <= 0:
        return []
    samples = []
    model.eval()
    for prompt in SAMPLE_PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
        with torch.no_grad():
            outs = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen_config)
        reply = tokenizer.decode(outs[0, ids.shape[1]:], skip_special_tokens=True)
        samples.append({"prompt": prompt, "greedy": reply.strip()})
    return samples

