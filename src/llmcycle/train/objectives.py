"""What the one training loop optimises: an objective is a summed loss over a batch plus the number of units the
sum is over (its token or pair weighting), so accumulation over micro-batches and processes stays exact.

Pure loss functions (`dpo_loss`, `kto_loss`, `orpo_loss`, `bradley_terry_loss`, `distill_kl`, `grpo_token_loss`)
take log-probabilities or logits and are checked against reference numbers (TRL's) without the loop. The objective
classes turn a batch into those inputs.

Preference batches (see `llmcycle.train.align`) hold `input_ids`, `attention_mask` and `completion_mask` for 2B rows:
the B chosen completions first, then the B rejected ones; `completion_mask[r, t] = 1` when token t of row r is a
completion token (a target of the loss, unshifted). `ref_logps` [2B] are the reference model's summed log-probs of
the same completions, computed before training (with the adapter disabled for LoRA), so memory does not double.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from llmcycle.train.linear_ce import decoder_hidden, plain_head, summed_linear_cross_entropy

Batch = dict[str, Any]


# ---- supervised cross-entropy (the loop's default) -------------------------------------------------------------
def summed_cross_entropy(model, batch: Batch, hidden_fn: Callable[[Any, Batch], Any] = decoder_hidden):
    """Sum of next-token cross-entropy over label tokens (token weighting is done by the caller). For a plain causal
    LM the output projection is fused with the loss (see `linear_ce.py`) on the hidden states `hidden_fn` returns."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    own = getattr(model, "fused_cross_entropy", None)  # a wrapper that knows its fused loss (SFT's AssistantLogits)
    loss = own(inputs, batch["labels"]) if own is not None else None
    if loss is not None:
        return loss
    head = plain_head(model)
    if head is not None:
        return summed_linear_cross_entropy(hidden_fn(model, inputs), head.weight, batch["labels"])
    return logits_cross_entropy(model, batch)


def logits_cross_entropy(model, batch: Batch):
    """`summed_cross_entropy` from the model's whole logits: any causal LM (and the reference for the fused path)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    # shift the labels, not the logits: slicing the logits would copy the largest tensor of the step
    labels = F.pad(batch["labels"][..., 1:], (0, 1), value=-100)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100, reduction="sum")


class CrossEntropy:
    """Next-token cross-entropy on `labels` (-100 = ignored), weighted per label token: SFT and pretraining."""

    name = "cross_entropy"

    def __init__(self, loss_fn: Callable[[Any, Batch], Any] = summed_cross_entropy):
        self.loss_fn = loss_fn

    def loss(self, model, batch: Batch):
        return self.loss_fn(model, batch)

    def weight(self, batch: Batch) -> float:
        return float((batch["labels"][..., 1:] != -100).sum())


# ---- log-probabilities of completions ----------------------------------------------------------------------------
def token_logps(model, batch: Batch):
    """(per-token log-probs [N, T-1] of each next token, mask [N, T-1] of completion targets). Logits are only
    computed from the first completion position on: prompts carry no loss."""
    mask = batch["completion_mask"][:, 1:].bool()
    cols = mask.any(dim=0).nonzero()
    first = int(cols[0]) if len(cols) else mask.shape[1] - 1
    keep = mask.shape[1] - first  # logits for positions first..T-2 (+ the last one, dropped below)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep + 1,
                use_cache=False)
    logits = out.logits[:, :-1].float()
    targets = batch["input_ids"][:, first + 1:]
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logps * mask[:, first:], mask[:, first:]


def sequence_logps(model, batch: Batch):
    """(summed log-prob [N], completion token count [N]) of each row's completion."""
    logps, mask = token_logps(model, batch)
    return logps.sum(-1), mask.sum(-1)


def reference_logps(model, batch: Batch):
    """The reference's summed completion log-probs: the base with the adapter disabled (PEFT), else `model`
    itself (called before training, when the policy still is the reference)."""
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    with torch.no_grad(), ctx:
        logps, _ = sequence_logps(model, batch)
    model.train(was_training)
    return logps


# ---- pure losses (per pair / per row, not reduced) --------------------------------------------------------------
def dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta: float, label_smoothing: float = 0.0):
    """DPO (sigmoid): -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)), per pair."""
    delta = (chosen - ref_chosen) - (rejected - ref_rejected)
    return (-F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing)


def kto_loss(logps, ref_logps, desirable, beta: float, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0, kl=None):
    """KTO per row: 1 - sigmoid(beta (ratio - z)) for desirable rows, 1 - sigmoid(beta (z - ratio)) for the others.
    z is the batch's reference point: the mean policy/reference KL estimate, clamped at 0 and not differentiated."""
    ratio = logps - ref_logps
    z = (ratio.mean() if kl is None else kl).detach().clamp(min=0)
    good = desirable.bool()
    loss = torch.where(good, desirable_weight * (1 - torch.sigmoid(beta * (ratio - z))),
                       undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio))))
    return loss


def orpo_loss(chosen_mean, rejected_mean, chosen_nll, lam: float):
    """ORPO per pair: NLL of the chosen reply (per token) - lam * log sigmoid(log odds ratio); no reference model.
    `*_mean` are mean per-token log-probs, which keeps the odds in (0, 1)."""
    log_odds = (chosen_mean - rejected_mean) - (torch.log1p(-torch.exp(chosen_mean).clamp(max=1 - 1e-6))
                                                - torch.log1p(-torch.exp(rejected_mean).clamp(max=1 - 1e-6)))
    return chosen_nll - lam * F.logsigmoid(log_odds)


def bradley_terry_loss(chosen_rewards, rejected_rewards, center: float = 0.0):
    """-log sigmoid(r_chosen - r_rejected) per pair (+ center * (r_c + r_r)^2 to keep rewards near zero)."""
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards)
    if center:
        loss = loss + center * (chosen_rewards + rejected_rewards) ** 2
    return loss


def distill_kl(student_logits, teacher_logits, temperature: float = 1.0):
    """KL(teacher || student) per position over the vocabulary, at `temperature` (scaled by T^2 as usual)."""
    t = temperature
    teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    student = F.log_softmax(student_logits.float() / t, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1) * t * t


def grpo_token_loss(logps, ref_logps, advantages, mask, beta: float):
    """GRPO per row: mean over completion tokens of -(ratio * A) + beta * KL(k3), where ratio = exp(logp - logp.detach())
    (one update per rollout, so the clipped ratio is 1 and only its gradient matters)."""
    ratio = torch.exp(logps - logps.detach())
    delta = ref_logps - logps
    kl = torch.exp(delta) - delta - 1
    per_token = -(ratio * advantages.unsqueeze(-1)) + beta * kl
    counts = mask.sum(-1).clamp(min=1)
    return (per_token * mask).sum(-1) / counts, ((kl * mask).sum(-1) / counts).detach()


# ---- objectives over batches ------------------------------------------------------------------------------------
class Preference:
    """DPO, KTO or ORPO over preference batches; weighted per pair (KTO: per row)."""

    def __init__(self, method: str, beta: float = 0.1, label_smoothing: float = 0.0,
                 desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
        self.name, self.method, self.beta = method, method, beta
        self.label_smoothing = label_smoothing
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight

    def weight(self, batch: Batch) -> float:
        rows = batch["input_ids"].shape[0]
        return float(rows if self.method == "kto" else rows // 2)

    def per_row(self, model, batch: Batch):
        """The unreduced loss and the chosen-minus-rejected reward margin (DPO/ORPO) for a batch."""
        logps, counts = sequence_logps(model, batch)
        if self.method == "kto":
            loss = kto_loss(logps, batch["ref_logps"], batch["label"], self.beta, self.desirable_weight,
                            self.undesirable_weight)
            return loss, None
        chosen, rejected = logps.chunk(2)
        if self.method == "dpo":
            ref_c, ref_r = batch["ref_logps"].chunk(2)
            loss = dpo_loss(chosen, rejected, ref_c, ref_r, self.beta, self.label_smoothing)
            return loss, self.beta * ((chosen - ref_c) - (rejected - ref_r)).detach()
        n_c, n_r = counts.clamp(min=1).chunk(2)
        loss = orpo_loss(chosen / n_c, rejected / n_r, -chosen / n_c, self.beta)
        return loss, (chosen / n_c - rejected / n_r).detach()

    def loss(self, model, batch: Batch):
        return self.per_row(model, batch)[0].sum()


class RewardBT:
    """Bradley–Terry on a sequence-classification model's scalar: chosen rows first, rejected rows second."""

    name = "bradley_terry"

    def __init__(self, center: float = 0.0):
        self.center = center

    def rewards(self, model, batch: Batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()

    def weight(self, batch: Batch) -> float:
        return float(batch["input_ids"].shape[0] // 2)

    def loss(self, model, batch: Batch):
        chosen, rejected = self.rewards(model, batch).chunk(2)
        return bradley_terry_loss(chosen, rejected, self.center).sum()


class Distillation:
    """alpha * KL(teacher || student) + (1 - alpha) * CE on SFT batches (assistant tokens only), per trained token.
    The student and the teacher are both `AssistantLogits` wrappers, so logits exist only at trained positions."""

    name = "distillation"

    def __init__(self, teacher, alpha: float = 0.5, temperature: float = 1.0):
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def weight(self, batch: Batch) -> float:
        return float((batch["labels"][..., 1:] != -100).sum())

    def loss(self, model, batch: Batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        student = model(**inputs).logits[0, :-1]
        with torch.no_grad():
            teacher = self.teacher(**inputs).logits[0, :-1]
        targets = batch["labels"][0, 1:]
        ce = F.cross_entropy(student.float(), targets, reduction="sum")
        kl = distill_kl(student, teacher, self.temperature).sum()
        return self.alpha * kl + (1 - self.alpha) * ce


class GRPO:
    """Group-relative policy optimisation on rollout batches (see `llmcycle.train.grpo`): per-token log-probs of the
    sampled replies, their group-normalised advantages, and a k3 KL to the reference (the adapter disabled, or a
    frozen `reference` copy when every weight trains: online samples have no precomputable reference); weighted
    per reply."""

    name = "grpo"

    def __init__(self, beta: float = 0.04, rollout: Optional[Callable[[Any, Batch], Batch]] = None,
                 reference: Any = None):
        self.beta, self.rollout, self.reference = beta, rollout, reference
        self.logged: dict[str, list[float]] = {}

    def weight(self, batch: Batch) -> float:
        """Replies in the batch (a prompt batch says how many its rollout will make)."""
        return float(batch["n_replies"]) if "n_replies" in batch else float(batch["input_ids"].shape[0])

    def loss(self, model, batch: Batch):
        if self.rollout is not None and "completion_mask" not in batch:
            batch = self.rollout(model, batch)
        logps, mask = token_logps(model, batch)
        ref_model = self.reference if self.reference is not None else model
        ctx = model.disable_adapter() if self.reference is None and hasattr(model, "disable_adapter") \
            else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            ref, _ = token_logps(ref_model, batch)
        per_row, kl = grpo_token_loss(logps, ref, batch["advantages"], mask.float(), self.beta)
        for key, value in (("kl", float(kl.mean())), *batch.get("stats", {}).items()):
            self.logged.setdefault(key, []).append(float(value))
        return per_row.sum()

    def drain_metrics(self) -> dict[str, float]:
        """Mean of what was seen since the last call (reward mean/std, KL, reply length), for the loop's log."""
        out = {k: sum(v) / len(v) for k, v in self.logged.items() if v}
        self.logged = {}
        return out
