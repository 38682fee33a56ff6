"""The one training loop every training stage uses (pretrain, finetune full/LoRA/DoRA/QLoRA).

`train_loop(model, train_batches, val_batches, cfg, work_dir)` optimises the parameters with requires_grad (AdamW,
linear warmup + cosine decay, gradient accumulation and clipping, autocast where the device supports it) under
accelerate, so the same code runs on one CPU, `accelerate launch --num_processes 2 --cpu`, or DDP on GPUs.

- `train_batches(epoch)` yields dicts of tensors for `model(**batch)`, each holding `labels` (-100 = ignored). It
  must be deterministic per epoch: resume regenerates the epoch and skips the batches already consumed. With several
  processes, process r takes batches r, r+W, r+2W, ... of every group of W (the world size).
- `val_batches()` yields such batches for validation (or is None / returns None: no validation).
- `objective` (see `objectives.py`) says what is optimised: a summed loss over a batch and the units it sums over
  (label tokens for cross-entropy, the default; pairs for DPO; replies for GRPO). Batches then hold whatever the
  objective reads, and `labels` only for cross-entropy.
- The loss is unit-weighted (token-weighted for cross-entropy) over the whole optimizer step (all micro-batches, all processes), so grad_accum and
  the number of processes change the speed of a run, not its maths.
- Checkpoints: `work_dir/checkpoints/step-NNNNNN/{trainable.safetensors, optimizer.pt, scheduler.pt, rng.pt,
  state.json}`; `resume=True` continues from the newest (TrainingError if none) and ends with the same loss as an
  uninterrupted run. A NaN/inf loss raises TrainingError before the bad update, keeping the last good checkpoint.
- `max_minutes` bounds the run by wall-clock time as well as steps (see `schedule.py`); a resumed run counts the
  time its checkpoint had already spent. Inside `schedule.run_deadline` the budget also ends in time for the work
  that must follow it before the run's deadline.
- Logs: `work_dir/metrics.jsonl`, `work_dir/tensorboard/`, `work_dir/loss.png`, a progress bar.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Optional

import torch
from accelerate.utils import broadcast, set_seed
from pydantic import Field

from llmcycle.config import StageConfig
from llmcycle.errors import TrainingError
from llmcycle.progress import bar
from llmcycle.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, trainable_state
from llmcycle.train.dropout import use_fast_dropout
from llmcycle.train.metrics import LOSS_LABELS, MetricsLog
from llmcycle.train.mfu import flops_per_token, measured_peak_flops
from llmcycle.train.objectives import CrossEntropy, logits_cross_entropy
from llmcycle.train.objectives import summed_cross_entropy as _summed_loss
from llmcycle.train.schedule import TimeBudget, make_scheduler
from llmcycle.train.fastlinear import requested, use_fast_linears
from llmcycle.train.linear_ce import decoder_hidden, plain_head
from llmcycle.train.setup import distributed_state, make_accelerator, make_optimizer, placed_by_loader
from llmcycle.train.validation import evaluate, evaluate_rows

__all__ = ["LoopConfig", "LoopResult", "train_loop", "evaluate", "evaluate_rows", "distributed_state", "step_hook"]

Batch = dict[str, Any]
_STEP_HOOKS: list[Callable[[int, dict[str, Any]], None]] = []


@contextmanager
def step_hook(fn: Callable[[int, dict[str, Any]], None]):
    """Within the block, every training stage calls `fn(step, record)` after each optimizer step; `record` holds
    `val_loss` after an evaluation. For callers that drive whole stages, e.g. a hyperparameter search pruning a
    trial (the hook may raise to stop the run)."""
    _STEP_HOOKS.append(fn)
    try:
        yield fn
    finally:
        _STEP_HOOKS.remove(fn)


class LoopConfig(StageConfig):
    max_steps: int = Field(200, ge=1, description="Optimizer steps.")
    max_epochs: Optional[float] = Field(
        None, gt=0, description="Passes over the training rows at most, where the stage knows how many rows it has: "
        "with few rows max_steps shrinks to this many passes (the lr schedule with it), so a small data set is not "
        "learned by heart. None = steps only.")
    max_minutes: Optional[float] = Field(
        None, gt=0, description="Wall-clock budget for the optimizer steps (evaluations excluded): training stops "
        "when it is spent or at max_steps, whichever comes first, and the lr schedule decays by whichever is further "
        "along. None = steps only (the same steps on every machine).")
    batch_size: int = Field(8, ge=1, description="Rows per micro-batch (per process).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="The decay ends at lr * min_lr_ratio.")
    decay: Literal["cosine", "linear", "wsd"] = Field(
        "cosine", description="The lr's shape after warmup: cosine, linear, or wsd (warmup-stable-decay: the peak "
        "until the last 20% of the run, then linear).")
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0, description="Applied to matrices only, not to norms and biases.")
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float = Field(1.0, ge=0, description="0 = no clipping.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 (or fp16) autocast on GPUs that support it, fp32 on CPU.")
    eval_every: int = Field(50, ge=1)
    eval_batches: Optional[int] = Field(20, ge=1, description="Val batches per evaluation (None = all).")
    log_every: int = Field(10, ge=1)
    save_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping_patience: Optional[int] = Field(None, ge=1, description="Evals without improvement.")
    seed: int = 0
    compile: bool = Field(False, description="torch.compile the forward + loss: ~1.25x faster steps on CPU, "
                          "after a compile of tens of seconds (worth it for long runs only).")

    def capped(self, rows: Optional[int], processes: int = 1) -> "LoopConfig":
        """This config with max_steps cut to `max_epochs` passes over `rows` training rows (each step takes
        batch_size x grad_accum rows on each of `processes`); unchanged when either is unknown."""
        if self.max_epochs is None or not rows:
            return self
        per_step = self.batch_size * self.grad_accum * processes
        steps = max(1, math.ceil(self.max_epochs * rows / per_step))
        return self.model_copy(update={"max_steps": min(self.max_steps, steps)}) if steps < self.max_steps else self


@dataclass
class LoopResult:
    steps: int
    tokens: int
    train_loss: float
    val_loss: Optional[float]
    best_val_loss: Optional[float]
    history: list[dict[str, Any]]
    stopped_early: bool
    seconds: float
    tokens_per_s: float = 0.0
    mfu: float = 0.0
    peak_flops: float = 0.0
    budget_spent: bool = False
    budget_seconds: Optional[float] = None  # the step seconds it was allowed in the end (None: steps only)
    cut_by_deadline: bool = False  # the run's deadline ended it before its own max_minutes
    val_rows: list[list[float]] = field(default_factory=list)  # the last evaluation's batches: [summed loss, units]


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs; saved as checkpoints' state.json."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0  # batches of `epoch` already consumed (counted over all processes)
    tokens: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    best_val_loss: Optional[float] = None
    evals_without_improvement: int = 0
    last_train_loss: float = float("nan")
    last_val_loss: Optional[float] = None
    last_val_rows: list[list[float]] = field(default_factory=list)  # its batches' [summed loss, units]
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoopState":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def train_loop(model, train_batches: Callable[[int], Iterable[Batch]],
               val_batches: Optional[Callable[[], Optional[Iterable[Batch]]]], cfg: LoopConfig, work_dir: Path,
               resume: bool = False, desc: str = "train",
               on_step: Optional[Callable[[int, dict[str, Any]], None]] = None, objective: Any = None,
               rows: Optional[int] = None) -> LoopResult:
    """Train `model` in place; see the module docstring. `on_step(step, record)` runs after each optimizer step;
    `rows` (the training rows, where known) lets `cfg.max_epochs` cap the steps."""
    work_dir = Path(work_dir)
    accelerator = make_accelerator(cfg.precision)
    cfg = cfg.capped(rows, accelerator.num_processes)
    set_seed(cfg.seed)
    if not placed_by_loader(model):
        model.to(accelerator.device)
    if requested(model):  # float32 CPU products through oneDNN where they measured faster (train/fastlinear.py)
        use_fast_linears(model)
    use_fast_dropout(model)  # same masks' distribution, a third of the time on CPU (train/dropout.py)
    optimizer = make_optimizer(model, cfg, accelerator.device)
    budget = TimeBudget(cfg.max_minutes)
    scheduler = make_scheduler(optimizer, cfg.max_steps, cfg.warmup_steps, cfg.min_lr_ratio, budget.fraction,
                               cfg.decay)
    state = LoopState()
    ckpt_root = work_dir / "checkpoints"
    if resume:
        state = LoopState.from_dict(load_checkpoint(latest_checkpoint(ckpt_root), model, optimizer, scheduler))
    budget.update(state.train_seconds, state.step)
    model, optimizer = accelerator.prepare(model, optimizer)
    main = accelerator.is_main_process
    log = MetricsLog(work_dir, main, state.history)
    peak = measured_peak_flops(accelerator.device, _peak_dtype(accelerator))
    trainable = [p for p in model.parameters() if p.requires_grad]
    objective = objective or CrossEntropy(_compiled_loss() if cfg.compile else _summed_loss)
    stream = _batch_stream(train_batches, state, accelerator.num_processes, accelerator.process_index)
    progress = bar(total=cfg.max_steps, initial=state.step, desc=desc, unit="step") if main else _Silent()
    window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}
    fpt = None
    stopped_early, started = False, time.perf_counter() - state.seconds
    last_saved = state.step if resume else -1
    try:
        while state.step < cfg.max_steps and not budget.exhausted() and not stopped_early:
            tick = time.perf_counter()
            micro = [next(stream) for _ in range(cfg.grad_accum)]
            loss, tokens, grad_norm = _optimizer_step(model, micro, optimizer, trainable, cfg, accelerator, objective)
            _check_finite(loss, grad_norm, accelerator, state.step + 1, ckpt_root, last_saved)
            seq_len = micro[0]["input_ids"].shape[-1] if "input_ids" in micro[0] else 1
            fpt = fpt or flops_per_token(accelerator.unwrap_model(model), seq_len)
            _account(state, window, loss, tokens, time.perf_counter() - tick)
            _agree_budget(budget, state, accelerator)
            scheduler.step()  # after the budget update, so the last step under a budget sets the floor lr
            last = state.step == cfg.max_steps or budget.exhausted()
            progress.update(1)
            record: dict[str, Any] = {"step": state.step, "loss": loss}
            if state.step % cfg.log_every == 0 or last:
                record = _train_record(state, window, optimizer, grad_norm, fpt, peak, accelerator.num_processes)
                _log(record, objective, log, progress, window)
            if state.step % cfg.eval_every == 0 or last:
                stopped_early = _evaluate_and_track(model, val_batches, cfg, state, log, accelerator, objective)
                if state.last_val_loss is not None:
                    record = {**record, "val_loss": state.last_val_loss}
            state.seconds = time.perf_counter() - started
            if state.step % cfg.save_every == 0 or last or stopped_early:
                _save(accelerator, model, optimizer, scheduler, state, log, ckpt_root, cfg.keep_checkpoints)
                last_saved = state.step
            for hook in ([on_step] if on_step is not None else []) + list(_STEP_HOOKS):
                hook(state.step, record)
    finally:
        progress.close()
        log.close()
    log.plot(f"{desc}: loss", LOSS_LABELS.get(getattr(objective, "name", ""), "cross-entropy loss"))
    accelerator.wait_for_everyone()
    result = _result(state, log, stopped_early, fpt, peak, accelerator.num_processes)
    result.budget_spent = budget.exhausted()
    result.budget_seconds = budget.limit
    result.cut_by_deadline = budget.exhausted() and budget.cut_by_deadline()
    return result


def _agree_budget(budget: TimeBudget, state: LoopState, accelerator) -> None:
    """Update the budget after a step; every process takes the main one's seconds and limit, so all stop at the
    same step and use one lr."""
    budget.update(state.train_seconds, state.step)
    if budget.limit is None or accelerator.num_processes == 1:
        return
    value = torch.tensor([budget.spent, budget.limit], dtype=torch.float64, device=accelerator.device)
    budget.spent, budget.limit = (float(v) for v in broadcast(value, from_process=0).tolist())


def _result(state: LoopState, log: MetricsLog, stopped_early: bool, fpt: Optional[float], peak: float,
            world: int) -> LoopResult:
    tokens_per_s = state.tokens / max(state.train_seconds, 1e-9)
    return LoopResult(
        steps=state.step, tokens=state.tokens, train_loss=_recent_train_loss(log.history, state),
        val_loss=state.last_val_loss, best_val_loss=state.best_val_loss, history=list(log.history),
        stopped_early=stopped_early, seconds=state.seconds, tokens_per_s=tokens_per_s,
        mfu=tokens_per_s * (fpt or 0.0) / (peak * world), peak_flops=peak, val_rows=list(state.last_val_rows),
    )


def _account(state: LoopState, window: dict[str, float], loss: float, tokens: int, elapsed: float) -> None:
    """One optimizer step done: the run's totals and the logging window's sums."""
    state.step += 1
    state.tokens += tokens
    state.last_train_loss = loss
    state.train_seconds += elapsed
    for key, value in (("loss", loss), ("steps", 1), ("tokens", tokens), ("seconds", elapsed)):
        window[key] += value


def _log(record: dict[str, Any], objective: Any, log: MetricsLog, progress: Any, window: dict[str, float]) -> None:
    """Write a train record (with the objective's own metrics) and start a new logging window."""
    record.update(objective.drain_metrics() if hasattr(objective, "drain_metrics") else {})
    log.log(record)
    progress.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
    window.update(dict.fromkeys(window, 0))


def _peak_dtype(accelerator):
    if accelerator.device.type == "cuda":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    return torch.float32


def _batch_stream(train_batches, state: LoopState, world: int, rank: int) -> Iterator[Batch]:
    """This process's batches from the saved data position on, epoch after epoch; keeps `state` up to date."""
    while True:
        source = iter(train_batches(state.epoch))
        for _ in itertools.islice(source, state.batch_index):
            pass
        produced = False
        while True:
            group = list(itertools.islice(source, world))
            if len(group) < world:  # a short last group is dropped so every process does the same steps
                break
            produced = True
            state.batch_index += world
            yield group[rank]
        if not produced and state.batch_index == 0:
            raise TrainingError(f"epoch {state.epoch} yields no training batches (too little data for "
                                f"{world} process(es) at this batch size and sequence length)")
        state.epoch += 1
        state.batch_index = 0


def _optimizer_step(model, micro: list[Batch], optimizer, trainable, cfg: LoopConfig, accelerator, objective):
    """Forward/backward over the micro-batches, clip, step. Returns (mean loss over all the objective's units of all
    processes, input tokens processed here and elsewhere, grad norm)."""
    device = accelerator.device
    micro = [{k: (v.to(device) if hasattr(v, "to") else v) for k, v in b.items()} for b in micro]
    counts = torch.tensor([objective.weight(b) for b in micro] + [0.0], device=device)
    counts[-1] = float(sum(_input_tokens(b) for b in micro))
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, "sum")
    label_total = max(float(counts[:-1].sum()), 1.0)
    scale = accelerator.num_processes / label_total  # DDP averages gradients over processes
    loss_sum = torch.zeros((), device=device)
    model.train()
    for i, batch in enumerate(micro):
        sync = i == len(micro) - 1
        ctx = accelerator.no_sync(model) if not sync else _null()
        with ctx, accelerator.autocast():  # explicit: a fused loss calls the decoder, not the wrapped forward
            summed = objective.loss(model, batch)
            accelerator.backward(summed * scale)
        loss_sum += summed.detach()
    grad_norm = None
    if cfg.max_grad_norm > 0:
        grad_norm = float(accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm))
    if accelerator.num_processes > 1:
        loss_sum = accelerator.reduce(loss_sum, "sum")
    loss = float(loss_sum) / label_total
    finite_grads = grad_norm is None or math.isfinite(grad_norm) or accelerator.mixed_precision == "fp16"
    if math.isfinite(loss) and finite_grads:  # fp16's grad scaler skips inf steps itself
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, int(counts[-1]), grad_norm


_COMPILED = None


def _compiled_loss():
    """`_summed_loss` with the model under torch.compile, so its elementwise work fuses; one per process (the model
    is an argument, so a compiled graph is reused by later loops on same-shaped models). For a plain causal LM only
    the decoder is compiled: the fused projection + loss (`linear_ce.py`) already keeps its logits in cache; other
    models (and wrappers) compile the whole logits loss."""
    global _COMPILED
    if _COMPILED is None:
        hidden, whole = torch.compile(decoder_hidden), torch.compile(logits_cross_entropy)

        def loss(model, batch):
            return _summed_loss(model, batch, hidden) if plain_head(model) is not None else whole(model, batch)

        _COMPILED = loss
    return _COMPILED


def _input_tokens(batch: Batch) -> int:
    mask = batch.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    return int(batch["input_ids"].numel()) if "input_ids" in batch else int(batch["labels"].numel())


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Silent:
    """The progress bar of processes other than the main one."""

    def update(self, *args, **kw):
        pass

    set_postfix = close = update


def _train_record(state: LoopState, window, optimizer, grad_norm, fpt, peak, world) -> dict[str, Any]:
    steps = max(1, window["steps"])
    tokens_per_s = window["tokens"] / max(window["seconds"], 1e-9)
    return {
        "step": state.step, "split": "train", "loss": window["loss"] / steps,
        "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm, "tokens": state.tokens,
        "tokens_per_s": tokens_per_s, "mfu": tokens_per_s * fpt / (peak * world), "elapsed_s": state.seconds,
    }


def _evaluate_and_track(model, val_batches, cfg: LoopConfig, state: LoopState, log: MetricsLog, accelerator,
                        objective: Any = None) -> bool:
    """Evaluate, log, update best/patience; True when early stopping says stop."""
    val, rows = evaluate_rows(model, val_batches, cfg, accelerator, objective)
    if val is None:
        return False
    state.last_val_loss, state.last_val_rows = val, rows
    log.log({"step": state.step, "split": "val", "val_loss": val, "val_ppl": math.exp(min(val, 50.0))})
    if not math.isfinite(val):
        raise TrainingError(f"step {state.step}: validation loss is {val}: training diverged; try a lower lr")
    if state.best_val_loss is None or val < state.best_val_loss:
        state.best_val_loss, state.evals_without_improvement = val, 0
        return False
    state.evals_without_improvement += 1
    patience = cfg.early_stopping_patience
    return patience is not None and state.evals_without_improvement >= patience


def _save(accelerator, model, optimizer, scheduler, state, log, root: Path, keep: int) -> None:
    """Checkpoint on the main process; everyone waits so no process runs ahead of a half-written checkpoint."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        params = trainable_state(accelerator.unwrap_model(model))
        state.history = list(log.history)
        loop_state = {k: getattr(state, k) for k in LoopState.__dataclass_fields__}
        save_checkpoint(root, state.step, params, optimizer.state_dict(), scheduler.state_dict(), loop_state, keep)
    accelerator.wait_for_everyone()


def _check_finite(loss: float, grad_norm: Optional[float], accelerator, step: int, root: Path, last_saved: int):
    """A NaN/inf loss (or gradient, except under fp16 whose scaler skips such steps) ends the run."""
    bad_grad = grad_norm is not None and not math.isfinite(grad_norm) and accelerator.mixed_precision != "fp16"
    if math.isfinite(loss) and not bad_grad:
        return
    good = str(root / f"step-{last_saved:06d}") if last_saved >= 0 else "none (no checkpoint was written yet)"
    raise TrainingError(f"step {step}: loss is {loss} (grad norm {grad_norm}): training diverged; last good "
                        f"checkpoint: {good}; try a lower lr")


def _recent_train_loss(history: list[dict[str, Any]], state: LoopState) -> float:
    """The train loss of the last logging window (smoother than one step's)."""
    for rec in reversed(history):
        if rec.get("split") == "train" and "loss" in rec:
            return float(rec["loss"])
    return float(state.last_train_loss)
