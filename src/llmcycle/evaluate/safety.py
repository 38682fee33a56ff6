"""Safety probe: adversarial prompts shipped with llmcycle, and the share of replies the moderation classifier
would stop.

A reply is flagged when the learned classifier (`llmcycle.safety.classify`, the server's own) puts it in a hazard
category, or when it holds personal data (the PII patterns). A rate from a classifier of unknown quality is no
measurement, so every result carries the classifier's own held-out precision, recall and false-block rate
(`safety_classifier_*`, read from the card shipped with its weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from llmcycle.evaluate.tasks import Subject, Task, TaskResult, generate, read_probe_file
from llmcycle.safety.categories import classify
from llmcycle.safety.classifier import accuracy_summary
from llmcycle.safety.flags import flag_reply, luhn_ok, pii_flags

__all__ = ["FLAGGER_NOTE", "SafetyTask", "classifier_metrics", "flag_reply", "flagged", "load_prompts", "luhn_ok",
           "reply_flags"]

PROMPTS_FILE = "safety_prompts.jsonl"
FLAGGER_NOTE = ("safety flags come from llmcycle's learned moderation classifier (hazard categories S1-S14, "
                "its held-out accuracy in safety_classifier_*) and the PII patterns (e-mail, phone, IP, card, SSN)")


def reply_flags(text: str) -> list[str]:
    """"hazard:<category>" for each category the classifier finds, "pii:<kind>" for personal data."""
    hazards = sorted({h.category for h in classify(text) if h.evidence.startswith("classifier")})
    return [f"hazard:{c}" for c in hazards] + pii_flags(text)


def classifier_metrics() -> dict[str, float]:
    """The classifier's held-out accuracy, flat, to sit beside every safety rate."""
    return {f"safety_classifier_{k}": float(v) for k, v in accuracy_summary().items()}


def load_prompts(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The adversarial prompts: JSON lines of {"id", "category", "prompt"} (the shipped set unless `path`)."""
    return read_probe_file(PROMPTS_FILE, path, ("prompt",))


class SafetyTask(Task):
    """Share of replies to adversarial prompts that moderation flags, overall, for hazards and for personal data."""

    name = "safety"

    def __init__(self, prompts: list[dict[str, Any]], settings: Any, batch_size: int,
                 flagger: Callable[[str], list[str]] = reply_flags):
        self.prompts, self.settings, self.batch_size, self.flagger = prompts, settings, batch_size, flagger

    def evaluate(self, subject: Subject) -> TaskResult:
        conversations = [[{"role": "user", "content": p["prompt"]}] for p in self.prompts]
        completions = generate(subject, conversations, self.settings, self.batch_size, "safety")
        samples, flagged, toxic, pii = [], 0, 0, 0
        for prompt, completion in zip(self.prompts, completions):
            flags = self.flagger(completion.text)
            flagged += bool(flags)
            toxic += any(f.startswith(("hazard:", "toxic:")) for f in flags)
            pii += any(f.startswith("pii:") for f in flags)
            samples.append({"probe": self.name, "id": prompt.get("id"), "category": prompt.get("category"),
                            "prompt": prompt["prompt"], "reply": completion.text, "flags": flags})
        n = max(1, len(self.prompts))
        metrics = {"safety_flag_rate": flagged / n, "safety_toxic_rate": toxic / n, "safety_pii_rate": pii / n,
                   **classifier_metrics()}
        return TaskResult(metrics, samples)


def flagged(samples: list[dict[str, Any]]) -> list[bool]:
    """Whether each reply was flagged, from a result's sample rows in prompt order: the per-prompt outcomes behind
    `safety_flag_rate`, for intervals and paired comparisons."""
    return [bool(r.get("flags")) for r in samples if r.get("probe") == SafetyTask.name]
