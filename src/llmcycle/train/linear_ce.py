"""Next-token cross-entropy fused with the output projection, a few hundred rows at a time: the [tokens, vocab]
logits never exist whole.

Why: at the default preset (vocab 8192, hidden 256) the logits of a 16 x 128 batch are 64 MiB in float32. Writing
them, log-softmaxing them, zero-filling their gradient and the two backward passes over them took ~15% of a CPU
training step (torch.profiler), all of it memory traffic outside the matrix products. Here each chunk's logits stay
in cache and their gradient (softmax - one-hot) is formed in place during the forward pass, where the products with
the hidden states and the weight happen too; backward only scales the two stored gradients by the incoming one.

Same maths as `F.cross_entropy(lm_head(h))` summed over label tokens: the products are the same products in the
same precision (bf16 under bf16 autocast, as autocast would pick, with float32 softmax), only the weight gradient's
summation order differs (sums of chunks), a float32 rounding difference.

Rows whose target is ignored (-100) are dropped before the projection, so they cost nothing. SFT batches, whose
model wrapper keeps only trained positions (`batches/sft.py`), use `summed_rows_cross_entropy` directly.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

IGNORE = -100
CHUNK_BYTES = 8 << 20  # float32 logits per chunk: in cache (measured best of 1-16 MiB at vocab 8192 on 1 core)
MIN_ROWS = 128  # fewer rows per product lose more in matmul efficiency than a big vocabulary saves in cache
# Causal LMs whose logits are exactly `lm_head(decoder(...).last_hidden_state)` (no soft-capping, no logit scale)
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3"})


def plain_head(model: Any) -> Optional[torch.nn.Linear]:
    """The bias-free output projection of a plain causal LM called directly (not through DDP, whose gradient sync
    needs its own forward, nor PEFT or other wrappers), else None: only then is computing logits ourselves the same
    as the model's forward."""
    if not isinstance(model, PreTrainedModel) or model.config.model_type not in PLAIN_HEAD_TYPES:
        return None
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    return head


def unwrapped(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (its adapter layers sit inside it), else `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_hidden(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """The last hidden states (after the final norm) for `model(**inputs)`, without the output projection."""
    return model.get_decoder()(**inputs, use_cache=False).last_hidden_state


def summed_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over label tokens of next-token cross-entropy of `hidden @ weight.T` ([B, T, H] hidden, [B, T] labels,
    -100 ignored; labels are shifted here, as the model's own loss shifts them)."""
    targets = F.pad(labels[..., 1:], (0, 1), value=IGNORE)
    keep = targets != IGNORE
    return summed_rows_cross_entropy(hidden[keep], weight, targets[keep])


def summed_rows_cross_entropy(rows: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropy of `rows @ weight.T` ([N, H] hidden states) against `targets` ([N], none ignored), in
    the autocast precision when autocast is on."""
    device_type = rows.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    if torch.is_grad_enabled() and (rows.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(rows, weight, targets, dtype)
    with torch.autocast(device_type, enabled=False):
        return _chunked(rows, weight, targets, dtype, False, False)[0]


class LinearCrossEntropy(torch.autograd.Function):
    """loss = sum_i CE(rows_i @ weight.T, targets_i); gradients formed in forward, scaled in backward."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype):
        with torch.autocast(rows.device.type, enabled=False):
            loss, grad_rows, grad_weight = _chunked(rows, weight, targets, dtype, ctx.needs_input_grad[0],
                                                    ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_rows, grad_weight)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor):
        grad_rows, grad_weight = ctx.saved_tensors
        scale = grad_loss.to(torch.float32)
        return (None if grad_rows is None else grad_rows * scale,
                None if grad_weight is None else grad_weight * scale, None, None)


def _chunked(rows: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype, want_rows: bool,
             want_weight: bool):
    """(summed loss, d loss / d rows or None, d loss / d weight or None), chunk by chunk of rows."""
    n, vocab = rows.shape[0], weight.shape[0]
    step = max(MIN_ROWS, CHUNK_BYTES // (4 * vocab))
    w = weight.to(dtype)
    grad_rows = torch.empty_like(rows) if want_rows else None
    grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
    total = torch.zeros((), dtype=torch.float32, device=rows.device)
    for start in range(0, n, step):
        h = rows[start:start + step].to(dtype)
        t = targets[start:start + step]
        logits = (h @ w.t()).float()
        lse = torch.logsumexp(logits, dim=-1)
        total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
        if not (want_rows or want_weight):
            continue
        grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place
        grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0
        grad = grad.to(dtype)
        if want_rows:
            grad_rows[start:start + step] = grad @ w
        if want_weight and dtype == torch.float32:
            grad_weight.addmm_(grad.t(), h)
        elif want_weight:
            grad_weight += (grad.t() @ h).float()
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    return total, grad_rows, grad_weight
