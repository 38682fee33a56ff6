"""Multiple choice by log-likelihood, as lm-evaluation-harness scores it.

Each choice is a continuation of the question's context (after a space). `acc` picks the choice with the highest
summed log-probability; `acc_norm` divides by the choice's length in characters first. The context is encoded on
its own and each continuation is what the whole text adds after it, so tokens match lm-eval's; the context runs
through the model once per question and its KV cache is shared by every choice.
"""

from __future__ import annotations

from typing import Any, Sequence

from llmcycle.evaluate.bench.common import Item, Prompting, Split, fewshot_examples, limit_items
from llmcycle.evaluate.tasks import Subject, Task, TaskResult
from llmcycle.progress import bar
from llmcycle.infer.scoring import score_questions

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"


def fewshot_prefix(examples: Sequence[Item], description: str = "") -> str:
    """lm-eval's layout: description, then each example's context, delimiter, right answer, blank line."""
    shots = "".join(f"{ex.context}{TARGET_DELIMITER}{ex.choices[ex.gold]}{FEWSHOT_DELIMITER}" for ex in examples)
    return description + shots


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context ids and the continuation ids the whole text adds after them (trailing spaces move over)."""
    stripped = context.rstrip(" ")
    continuation = context[len(stripped):] + continuation
    ctx = list(tokenizer(stripped, add_special_tokens=False)["input_ids"])
    whole = list(tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"])
    return ctx, whole[len(ctx):]


def choose(logliks: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(acc pick, acc_norm pick); ties go to the first, as numpy's argmax does."""
    raw = max(range(len(logliks)), key=lambda i: (logliks[i], -i))
    normed = [ll / max(1, len(c)) for ll, c in zip(logliks, choices)]
    norm = max(range(len(normed)), key=lambda i: (normed[i], -i))
    return raw, norm


class MultipleChoiceTask(Task):
    """A multiple-choice benchmark: `{name}_acc` and `{name}_acc_norm` in [0, 1]."""

    def __init__(self, name: str, split: Split, shots: int, limit: int | None, seed: int, batch_size: int,
                 description: Any = "", prompting: Prompting = Prompting()):
        self.name, self.prompting = name, prompting
        self.split, self.shots, self.seed, self.batch_size = split, shots, seed, batch_size
        self.items = limit_items(split.test, limit)
        self.description = description  # a string, or a function of the item (MMLU names its subject)

    def prompt(self, index: int, item: Item, tokenizer: Any = None) -> str:
        pool = self.split if "group" not in item.meta else Split(
            [], [e for e in self.split.fewshot if e.meta.get("group") == item.meta["group"]], "")
        description = self.description(item) if callable(self.description) else self.description
        text = fewshot_prefix(fewshot_examples(pool, self.shots, self.seed, index), description) + item.context
        return self.prompting.render(text, tokenizer)

    def evaluate(self, subject: Subject) -> TaskResult:
        hits = hits_norm = 0
        samples = []
        chunk = 32 * self.batch_size  # questions encoded, sorted by length and scored together
        with bar(total=len(self.items), desc=f"{subject.name}: {self.name}", unit="q") as progress:
            for start in range(0, len(self.items), chunk):
                items = self.items[start:start + chunk]
                prompts = [self.prompt(start + i, item, subject.tokenizer) for i, item in enumerate(items)]
                for item, logliks in zip(items, score_items(subject.engine, prompts, items, self.batch_size)):
                    pick, pick_norm = choose(logliks, item.choices)
                    hits += pick == item.gold
                    hits_norm += pick_norm == item.gold
                    samples.append({"probe": self.name, "id": item.id, "prompt": item.context[-300:],
                                    "reference": item.choices[item.gold], "reply": item.choices[pick],
                                    "loglik": [round(x, 4) for x in logliks]})
                progress.update(len(items))
        n = max(1, len(self.items))
        return TaskResult({f"{self.name}_acc": hits / n, f"{self.name}_acc_norm": hits_norm / n,
                           f"{self.name}_n": float(len(self.items))}, samples)


def score_items(engine: Any, prompts: Sequence[str], items: Sequence[Item], batch_size: int) -> list[list[float]]:
    """Summed log-likelihood of each item's choices, questions batched through `score_questions`."""
    results: list[list[float] | None] = [None] * len(items)
    batched, where = [], []
    for i, (prompt, item) in enumerate(zip(prompts, items)):
        pairs = [encode_pair(engine.tokenizer, prompt, TARGET_DELIMITER + c) for c in item.choices]
        if all(ctx == pairs[0][0] for ctx, _ in pairs):
            batched.append((pairs[0][0], [cont for _, cont in pairs]))
            where.append(i)
        else:  # the tokenizer merges across the boundary differently per choice: score each pair on its own
            rows = engine.score_ids([ctx for ctx, _ in pairs], [cont for _, cont in pairs], batch_size)
            results[i] = [float(sum(r)) for r in rows]
    for i, rows in zip(where, score_questions(engine, batched, batch_size)):
        results[i] = [float(sum(r)) for r in rows]
    return results  # type: ignore[return-value]
