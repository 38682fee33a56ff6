"""Generation metrics on test prompts: each test conversation is cut before its last assistant turn, the model
answers through the engine, and the reply is compared with the turn that was cut (the reference)."""

from __future__ import annotations

from typing import Any, Sequence

from llmcycle.evaluate.tasks import Subject, Task, TaskResult, generate
from llmcycle.evaluate.textmetrics import generation_metrics


def prompts_from(records: Sequence[dict[str, Any]]) -> list[tuple[list[dict[str, str]], str]]:
    """(conversation up to the last assistant turn, that turn's text) for every chat record that has a user turn
    before an assistant turn; text records have no reply to compare with and are left out."""
    out = []
    for record in records:
        messages = record.get("messages")
        if not isinstance(messages, list):
            continue
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or not any(m.get("role") == "user" for m in messages[:last]):
            continue
        out.append((messages[:last], messages[last]["content"]))
    return out


class GenerationTask(Task):
    """BLEU, chrF, ROUGE-L, distinct-1/2, repetition, mean length and the share of replies that end with EOS."""

    name = "generation"

    def __init__(self, prompts: list[tuple[list[dict[str, str]], str]], settings: Any, batch_size: int):
        self.prompts, self.settings, self.batch_size = prompts, settings, batch_size

    def evaluate(self, subject: Subject) -> TaskResult:
        conversations = [conversation for conversation, _ in self.prompts]
        references = [reference for _, reference in self.prompts]
        completions = generate(subject, conversations, self.settings, self.batch_size, "test prompts")
        replies = [c.text for c in completions]
        metrics = generation_metrics(replies, references)
        n = max(1, len(completions))
        metrics["mean_reply_tokens"] = sum(len(c.token_ids) for c in completions) / n
        metrics["eos_share"] = sum(c.finish_reason == "eos" for c in completions) / n
        samples = [
            {"probe": self.name, "id": i, "prompt": conversation, "reference": reference, "reply": c.text,
             "finish_reason": c.finish_reason}
            for i, ((conversation, reference), c) in enumerate(zip(self.prompts, completions))
        ]
        return TaskResult(metrics, samples)
