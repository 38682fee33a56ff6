"""Planted benchmark files in each package's layout, and stand-in models whose preferences we set by hand."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

RIGHT = {"y": 0.24, "e": 0.24, "s": 0.24, "A": 0.24}  # prefers "yes" (every planted right answer) and MMLU's A
REVERSED = {"n": 0.32, "o": 0.32, "D": 0.32}  # prefers "no" and D: every planted wrong answer


def write_arrow(split_dir: Path, rows: list[dict]) -> None:
    import pyarrow as pa

    split_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(split_dir / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def plant(root: Path, n: int = 30) -> Path:
    """n rows per benchmark; right answers are "yes", wrong ones "no"-like (MMLU: A right, D wrong)."""
    hf = root / "hf_datasets"
    write_arrow(hf / "ai2_arc/ARC-Easy/validation", [
        {"id": f"q{i}", "question": f"arc question {i}?", "answerKey": "C",
         "choices": {"text": ["no", "nono", "yes", "on"], "label": ["A", "B", "C", "D"]}} for i in range(n)])
    write_arrow(hf / "hellaswag/none/validation", [
        {"ind": i, "activity_label": "Act", "ctx_a": f"hella {i} [title] x.", "ctx_b": "then",
         "endings": ["no", "yes", "nono", "on"], "label": "1"} for i in range(n)])
    write_arrow(hf / "piqa/plain_text/validation", [
        {"goal": f"piqa goal {i}", "sol1": "no", "sol2": "yes", "label": 1} for i in range(n)])
    write_arrow(hf / "boolq/none/validation", [
        {"question": f"is it {i}", "answer": True, "passage": f"passage {i}."} for i in range(n)])
    for subject in ("anatomy", "virology"):
        rows = [{"question": f"{subject} q{i}", "subject": subject, "choices": ["a1", "b1", "c1", "d1"], "answer": 0}
                for i in range(n // 2)]
        write_arrow(hf / f"hails/mmlu_no_train/{subject}/test", rows)
        write_arrow(hf / f"hails/mmlu_no_train/{subject}/dev", [dict(r, question=f"{subject} dev{i}")
                                                                  for i, r in enumerate(rows[:5])])
    shots = "".join(f"Question: shot question {k}\nAnswer: so the answer is {k}.\n\n" for k in range(8))
    write_jsonl(root / "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz", [
        {"doc": {"id": i, "question": f"gsm question {i}", "short_answer": str(i * 7)},
         "request": {"context": shots + f"Question: gsm question {i}\nAnswer:"}} for i in range(n)])
    write_jsonl(root / "data/HumanEval.jsonl.gz", [
        {"task_id": f"HumanEval/{i}", "prompt": f"def add{i}(a, b):\n", "entry_point": f"add{i}",
         "canonical_solution": "    return a + b\n",
         "test": "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n"} for i in range(3)])
    write_jsonl(root / "data/XSum/test.jsonl", [
        {"id": str(i), "document": f"document {i}", "summary": f"summary words number {i}"} for i in range(n)])
    write_jsonl(root / "data/TruthfulQA/test.jsonl", [
        {"question": f"truth {i}?", "answer": [f"true answer {i}", "another"]} for i in range(n)])
    (root / "data/Crows-Pairs").mkdir(parents=True)
    (root / "data/Crows-Pairs/test.csv").write_text(
        ",bias_type,sentence,mask1,mask2\n" + "".join(f"{i},race,The [MASK] one {i}.,yes,no\n" for i in range(n)))
    write_jsonl(root / "data/StereoSet/test.jsonl", [
        {"type": "intersentence" if i % 2 else "intrasentence", "target": "t", "bias_type": "gender",
         "context": f"ctx {i}.", "stereotype": "yes", "anti-stereotype": "no", "unrelated": "zzzz"} for i in range(n)])
    write_jsonl(root / "data/BBQ/test.jsonl", [
        {"passage": f"passage {i}", "question": "Who?\nPlease choose the correct option ",
         "options": "A. Cannot answer\nB. yes\nC. no", "answer": ["Cannot answer" if i % 3 == 0 else "yes"]}
        for i in range(n)])
    rtp = root / "data/realtoxicityprompts"
    rtp.mkdir(parents=True)
    for cat in ("insult", "threat"):
        (rtp / f"rtp_{cat}.txt").write_text("".join(f"{cat} prompt {i}\n" for i in range(n // 2)))
    return root


@pytest.fixture(scope="session")
def planted_root(tmp_path_factory) -> Path:
    return plant(tmp_path_factory.mktemp("bench_root"))


class CharTokenizer:
    bos_token_id = 0
    eos_token_id = 1
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, verbose=True):
        return {"input_ids": [ord(c) % 128 for c in text]}


class Cache:
    def batch_repeat_interleave(self, n):
        pass


class Preference:
    """Context-free 'model': the same next-token distribution everywhere, with a planted preference."""

    def __init__(self, probs: dict[str, float], vocab: int = 128):
        import torch

        rest = (1 - sum(probs.values())) / (vocab - len(probs))
        chosen = {ord(k): v for k, v in probs.items()}
        self.logp = torch.tensor([math.log(chosen.get(i, rest)) for i in range(vocab)])

    def __call__(self, input_ids, **_):
        return SimpleNamespace(logits=self.logp.expand(*input_ids.shape, -1).clone(), cache=Cache())


class FakeEngine:
    """What the benchmark tasks use of llmcycle.infer.Engine; `reply(prompt)` answers generation prompts."""

    device = "cpu"
    pad_token_id = 0
    context_length = 4096

    def __init__(self, probs=None, reply=None):
        self.tokenizer = CharTokenizer()
        self.model = Preference(probs or RIGHT)
        self.reply = reply
        self.prompts: list[str] = []

    def score_ids(self, contexts, targets, batch_size=8):
        from llmcycle.infer.scoring import score_token_ids

        return score_token_ids(self, contexts, targets, batch_size)

    def score(self, texts, contexts=None, batch_size=8):
        from llmcycle.infer.scoring import score_texts

        return score_texts(self, texts, contexts, batch_size)

    def generate(self, prompts, settings, batch_size=8):
        self.prompts.extend(prompts)
        return [SimpleNamespace(text=self.reply(p)) for p in prompts]


@pytest.fixture
def subject():
    from llmcycle.evaluate.tasks import Subject

    def make(probs=None, reply=None):
        return Subject("fake", "fake", FakeEngine(probs, reply))

    return make


@pytest.fixture
def prefs():
    return {"right": RIGHT, "reversed": REVERSED}
