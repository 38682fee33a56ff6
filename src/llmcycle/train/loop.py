"""The one training loop every training stage uses (pretrain, finetune full/LoRA/DoRA/QLoRA).

INTERFACE (implementation pending):

class LoopConfig(StageConfig):
    max_steps: int            # optimizer steps
    batch_size: int           # micro-batch size (rows per forward)
    grad_accum: int           # micro-batches per optimizer step
    lr: float; min_lr_ratio: float; warmup_steps: int     # linear warmup, cosine decay to lr*min_lr_ratio
    weight_decay: float; betas: tuple[float, float]; max_grad_norm: float
    precision: "auto" | "fp32" | "bf16" | "fp16"         # autocast where the device supports it
    eval_every: int; eval_batches: int | None; log_every: int
    save_every: int; keep_checkpoints: int
    early_stopping_patience: int | None                 # evals without val improvement before stopping
    seed: int

def train_loop(model, train_batches, val_batches, cfg: LoopConfig, work_dir: Path, resume: bool = False,
               desc: str = "train") -> LoopResult
    train_batches(epoch: int) -> Iterable[dict[str, Tensor]]   deterministic per epoch (so resume can skip ahead)
    val_batches() -> Iterable[dict[str, Tensor]] | None
    Each batch is passed as model(**batch) and must hold `labels` (-100 = ignored).
    Optimises the parameters with requires_grad only, and checkpoints exactly those
    (work_dir/checkpoints/step-NNNNNN/{trainable.safetensors, optimizer.pt, scheduler.pt, rng.pt, state.json}),
    so a LoRA run checkpoints the adapter and a full run the whole model.
    Writes work_dir/metrics.jsonl (one JSON line per log/eval), work_dir/tensorboard/, work_dir/loss.png.
    resume=True continues from the newest checkpoint (TrainingError if none); NaN/inf loss raises TrainingError
    after keeping the last good checkpoint. Runs under accelerate (DDP/FSDP when launched that way).

@dataclass LoopResult: steps, tokens, train_loss, val_loss (last), best_val_loss, history (list of metric dicts),
                      stopped_early (bool), seconds
"""
