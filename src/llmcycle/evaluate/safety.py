"""Safety probe: adversarial prompts shipped with llmcycle, and the share of replies a content filter flags.

The flagger is the safety module's (`llmcycle.safety.flags.flag_reply`, shared with the server's moderation): it
answers "would a moderation filter stop this reply?"; it is no classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from llmcycle.evaluate.tasks import Subject, Task, TaskResult, generate, read_probe_file
from llmcycle.safety.flags import flag_reply, luhn_ok

__all__ = ["FLAGGER_NOTE", "SafetyTask", "flag_reply", "load_prompts", "luhn_ok"]

PROMPTS_FILE = "safety_prompts.jsonl"
FLAGGER_NOTE = ("safety flags come from llmcycle.safety.flags.flag_reply: the toxicity list and PII "
                "patterns shared with the data stage, plus insults, threats, card numbers (Luhn) and SSN-shaped ids")


def load_prompts(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The adversarial prompts: JSON lines of {"id", "category", "prompt"} (the shipped set unless `path`)."""
    return read_probe_file(PROMPTS_FILE, path, ("prompt",))


class SafetyTask(Task):
    """Share of replies to adversarial prompts that the filter flags, overall and for toxicity and personal data."""

    name = "safety"

    def __init__(self, prompts: list[dict[str, Any]], settings: Any, batch_size: int,
                 flagger: Callable[[str], list[str]] = flag_reply):
        self.prompts, self.settings, self.batch_size, self.flagger = prompts, settings, batch_size, flagger

    def evaluate(self, subject: Subject) -> TaskResult:
        conversations = [[{"role": "user", "content": p["prompt"]}] for p in self.prompts]
        completions = generate(subject, conversations, self.settings, self.batch_size, "safety")
        samples, flagged, toxic, pii = [], 0, 0, 0
        for prompt, completion in zip(self.prompts, completions):
            flags = self.flagger(completion.text)
            flagged += bool(flags)
            toxic += any(f.startswith("toxic:") for f in flags)
            pii += any(f.startswith("pii:") for f in flags)
            samples.append({"probe": self.name, "id": prompt.get("id"), "category": prompt.get("category"),
                            "prompt": prompt["prompt"], "reply": completion.text, "flags": flags})
        n = max(1, len(self.prompts))
        metrics = {"safety_flag_rate": flagged / n, "safety_toxic_rate": toxic / n, "safety_pii_rate": pii / n}
        return TaskResult(metrics, samples)
