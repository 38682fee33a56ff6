"""Parity check: do two models (typically an adapter on its base, and the merged model) behave the same?

"Same" means what users notice: equal logits on sample chats (max abs difference, bounded by a tolerance that
depends on the dtype the weights are stored in), the same rendered chat template (same text and token ids) and the
same EOS / end-of-turn tokens, so both stop at the same place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from llmcycle.errors import ArtifactError
from llmcycle.loading import adapter_base, is_adapter_dir, load_model, load_tokenizer_for
from llmcycle.modeldir import base_dtype_name, prepare_template, stop_token_ids
from llmcycle.train.lora import quiet_peft

SAMPLE_CHATS = [
    [{"role": "user", "content": "Hello! How are you today?"},
     {"role": "assistant", "content": "I am fine, thank you. And you?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What did you do this weekend?"},
     {"role": "assistant", "content": "I went hiking in the mountains with friends."},
     {"role": "user", "content": "Sounds fun. Where exactly?"}],
]

# (absolute, relative to the largest logit) tolerance by the dtype the weights are stored in: a merged model stored in
# bf16 differs from base + adapter by bf16 rounding of every weight, fp32 only by float summation order.
TOLERANCES = {"fp32": (1e-4, 1e-4), "fp16": (1e-3, 1e-2), "bf16": (1e-2, 5e-2)}


class ParityError(ArtifactError):
    """Two models that should be interchangeable are not."""


def stored_dtype(path: str | Path) -> str:
    return base_dtype_name(adapter_base(path) if is_adapter_dir(path) else str(path))


def render_samples(tokenizer: Any, chats: list[list[dict[str, str]]]) -> list[str]:
    prepare_template(tokenizer)
    return [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=c[-1]["role"] == "user")
            for c in chats]


def logit_diff(model_a: Any, model_b: Any, id_lists: list[list[int]]) -> tuple[float, float, float, float]:
    """(max abs diff, mean abs diff, largest |logit| of A, share of positions with the same top-1 token)."""
    worst, total, count, peak, same, positions = 0.0, 0.0, 0, 0.0, 0, 0
    with torch.no_grad():
        for ids in id_lists:
            x = torch.tensor([ids])
            la = model_a(input_ids=x).logits.float()
            lb = model_b(input_ids=x).logits.float()
            diff = (la - lb).abs()
            worst = max(worst, float(diff.max()))
            total += float(diff.sum())
            count += diff.numel()
            peak = max(peak, float(la.abs().max()))
            same += int((la.argmax(-1) == lb.argmax(-1)).sum())
            positions += la.shape[1]
    return worst, total / max(count, 1), peak, same / max(positions, 1)


def check_parity(a: str | Path, b: str | Path, tolerance: Optional[float] = None,
                 chats: Optional[list[list[dict[str, str]]]] = None) -> dict[str, Any]:
    """Compare models A and B (model or adapter dirs, hub ids); a JSON-ready report with `passed` and `summary`."""
    chats = chats or SAMPLE_CHATS
    tok_a, tok_b = load_tokenizer_for(a), load_tokenizer_for(b)
    text_a, text_b = render_samples(tok_a, chats), render_samples(tok_b, chats)
    ids_a = [tok_a(t, add_special_tokens=False)["input_ids"] for t in text_a]
    ids_b = [tok_b(t, add_special_tokens=False)["input_ids"] for t in text_b]
    with quiet_peft():
        model_a, model_b = load_model(a, dtype=torch.float32).eval(), load_model(b, dtype=torch.float32).eval()
    dtype = max((stored_dtype(a), stored_dtype(b)), key=lambda d: TOLERANCES[d][1])
    worst, mean, peak, top1 = logit_diff(model_a, model_b, ids_a)
    atol, rtol = TOLERANCES[dtype]
    bound = tolerance if tolerance is not None else atol + rtol * peak
    eos_a, eos_b = stop_token_ids(tok_a, model_a), stop_token_ids(tok_b, model_b)
    report = {
        "a": str(a), "b": str(b), "stored_dtype": dtype, "samples": len(chats),
        "tokens": sum(len(i) for i in ids_a),
        "max_abs_logit_diff": worst, "mean_abs_logit_diff": mean, "max_abs_logit": peak, "tolerance": bound,
        "top1_agreement": top1,
        "same_template": text_a == text_b and ids_a == ids_b,
        "eos_a": eos_a, "eos_b": eos_b, "same_eos": eos_a == eos_b,
    }
    problems = []
    if worst > bound:
        problems.append(f"max abs logit diff {worst:.3g} > tolerance {bound:.3g}")
    if not report["same_template"]:
        problems.append("chat templates render differently")
    if not report["same_eos"]:
        problems.append(f"EOS differs ({eos_a} vs {eos_b})")
    report["passed"] = not problems
    report["summary"] = "; ".join(problems) if problems else (
        f"max abs logit diff {worst:.3g} <= {bound:.3g}, same template, same EOS {eos_a}")
    return report


def format_report(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
