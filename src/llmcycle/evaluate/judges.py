"""Pairwise judges: which of two replies (or two conversations) is better, A, B, or a tie.

Two kinds behind one interface (`compare(pairs) -> verdicts`):
- `RewardModelJudge`: a trained reward model (llmcycle.train.reward) scores each side; a gap within `margin` is a tie.
- `LLMJudge`: a language model asked with its own rubric, each pair asked twice with the sides swapped; the two
  answers must agree, else the verdict is a tie (position bias cancels out instead of deciding). A local model's
  answer is the likeliest of the constrained choices "A", "B", "tie" scored through the engine, not free text;
  an OpenAI-compatible server (such as `llmcycle serve`) answers at temperature 0 and its first word is parsed.
`load_judge(spec)` picks the kind from a path or URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

from llmcycle.errors import ModelLoadError, UserError, first_line
from llmcycle.evaluate.stats import sign_test, win_rate_interval
from llmcycle.loading import resolve
from llmcycle.infer import Engine
from llmcycle.infer.scoring import score_questions
from llmcycle.train.reward import RewardModel

Verdict = Literal["A", "B", "tie"]
CHOICES: tuple[Verdict, ...] = ("A", "B", "tie")
SWAP = {"A": "B", "B": "A", "tie": "tie"}

RUBRIC = (
    "You are judging a chat assistant. Read the conversation and the two candidate replies, then say which reply "
    "is better: helpful, on topic, friendly, natural and not repetitive. A reply that repeats a stock phrase or "
    "ignores the user is worse. Answer with exactly one word: A, B, or tie."
)
RUBRIC_CONVERSATIONS = (
    "You are judging two chat conversations. Say which one is better: more witty, upbeat and interesting, with "
    "replies that follow what was said. Answer with exactly one word: A, B, or tie."
)


class JudgeUnavailable(UserError):
    """A judge that cannot be loaded or reached."""


@dataclass(frozen=True)
class Pair:
    """Two whole conversations to compare; `label` is the human verdict when known.

    When both share every turn but the last, the judge sees one conversation and two replies."""

    a: list[dict[str, str]]
    b: list[dict[str, str]]
    label: Verdict | None = None

    @property
    def shared_prompt(self) -> list[dict[str, str]] | None:
        if self.a[:-1] == self.b[:-1] and self.a[-1:] and self.a[-1].get("role") == "assistant":
            return self.a[:-1]
        return None


class Judge(Protocol):
    name: str

    def compare(self, pairs: Sequence[Pair]) -> list[Verdict]:
        """One verdict per pair: "A", "B" or "tie"."""


class RewardModelJudge:
    """A reward model's scores of both sides; |score A - score B| <= margin is a tie."""

    def __init__(self, path: str | Path, margin: float = 0.0, batch_size: int = 16):
        self.name, self.margin, self.batch_size = f"reward model {Path(path).name}", margin, batch_size
        self.model = RewardModel(path)

    def compare(self, pairs: Sequence[Pair]) -> list[Verdict]:
        scores = self.model.score([p.a for p in pairs] + [p.b for p in pairs], self.batch_size)
        out: list[Verdict] = []
        for sa, sb in zip(scores[:len(pairs)], scores[len(pairs):]):
            out.append("tie" if abs(sa - sb) <= self.margin else "A" if sa > sb else "B")
        return out


def transcript(messages: Sequence[dict[str, str]]) -> str:
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


def judge_messages(pair: Pair, rubric: str | None = None) -> list[dict[str, str]]:
    """The question put to an LLM judge for (A, B) in this order."""
    prompt = pair.shared_prompt
    if prompt is not None:
        body = (f"Conversation:\n{transcript(prompt)}\n\nReply A:\n{pair.a[-1]['content']}\n\n"
                f"Reply B:\n{pair.b[-1]['content']}\n\nWhich reply is better? Answer A, B, or tie.")
        system = rubric or RUBRIC
    else:
        body = (f"Conversation A:\n{transcript(pair.a)}\n\nConversation B:\n{transcript(pair.b)}\n\n"
                "Which conversation is better? Answer A, B, or tie.")
        system = rubric or RUBRIC_CONVERSATIONS
    return [{"role": "system", "content": system}, {"role": "user", "content": body}]


class LLMJudge:
    """Position-swapped pairwise judging by a language model (`backend.choose(questions) -> verdicts`)."""

    def __init__(self, backend: Any, rubric: str | None = None):
        self.backend, self.rubric = backend, rubric
        self.name = f"LLM judge {backend.name}"

    def compare(self, pairs: Sequence[Pair]) -> list[Verdict]:
        swapped = [Pair(p.b, p.a) for p in pairs]
        answers = self.backend.choose([judge_messages(p, self.rubric) for p in list(pairs) + swapped])
        out: list[Verdict] = []
        for first, second in zip(answers[:len(pairs)], answers[len(pairs):]):
            out.append(first if first == SWAP[second] else "tie")
        return out


class LocalChoices:
    """A local model dir (or GGUF file) through the engine: the likeliest answer among the constrained choices."""

    def __init__(self, path: str | Path, batch_size: int = 8, max_prompt_tokens: int | None = None):
        try:
            self.engine = Engine.load(path)
        except UserError:
            raise
        except Exception as exc:
            raise JudgeUnavailable(f"{path}: judge model does not load ({first_line(exc)})") from None
        self.name, self.batch_size = Path(path).name, batch_size
        context = getattr(self.engine.model.config, "max_position_embeddings", None) or 2048
        self.max_prompt_tokens = max_prompt_tokens or max(64, int(context) - 8)
        tok = self.engine.tokenizer
        self.choice_ids = [list(tok(c, add_special_tokens=False)["input_ids"]) for c in CHOICES]

    def choose(self, questions: Sequence[list[dict[str, str]]]) -> list[Verdict]:
        """One forward per question: the choices share its context (the engine's multiple-choice scoring)."""
        contexts = [self.engine.encode_chat(q)[-self.max_prompt_tokens:] for q in questions]
        scored = score_questions(self.engine, [(c, self.choice_ids) for c in contexts], self.batch_size)
        out: list[Verdict] = []
        for rows in scored:
            sums = [sum(row) for row in rows]
            out.append(CHOICES[max(range(len(CHOICES)), key=sums.__getitem__)])
        return out


def parse_verdict(text: str) -> Verdict:
    """The first word of a free-text answer as a verdict (anything else is a tie)."""
    word = (text.strip().split() or [""])[0].strip(".,:;!*\"'()").lower()
    return {"a": "A", "b": "B"}.get(word, "tie")


class RemoteChoices:
    """An OpenAI-compatible chat endpoint (e.g. `llmcycle serve`), answering at temperature 0."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str = "none", timeout: float = 60.0):
        try:
            import openai
        except ImportError:
            raise JudgeUnavailable(f"{base_url}: a judge server needs the openai client (pip install openai)") from None
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.name = base_url
        try:
            self.model = model or self.client.models.list().data[0].id
        except Exception as exc:
            raise JudgeUnavailable(f"{base_url}: judge server not reachable ({first_line(exc)})") from None

    def choose(self, questions: Sequence[list[dict[str, str]]]) -> list[Verdict]:
        out: list[Verdict] = []
        for messages in questions:
            try:
                reply = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=4,
                                                            temperature=0.0)
            except Exception as exc:
                raise JudgeUnavailable(f"{self.name}: judge request failed ({first_line(exc)})") from None
            out.append(parse_verdict(reply.choices[0].message.content or ""))
        return out


def is_reward_model(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def load_judge(spec: str | Path, rubric: str | None = None, margin: float = 0.0) -> Judge:
    """A judge from a reward model dir, a local model dir / GGUF file (LLM judge) or an http(s) URL (LLM judge)."""
    text = str(spec)
    if text.startswith(("http://", "https://")):
        return LLMJudge(RemoteChoices(text), rubric)
    path = Path(resolve(text))  # a named GGUF base (smollm2-135m-instruct) or a .gguf file: its imported dir
    if not path.exists():
        raise JudgeUnavailable(f"{text}: no such judge (a reward model dir, a model dir or GGUF, or an http URL)")
    try:
        if path.is_dir() and is_reward_model(path):
            return RewardModelJudge(path, margin)
        return LLMJudge(LocalChoices(path), rubric)
    except ModelLoadError as exc:
        raise JudgeUnavailable(str(exc)) from None


def reply_pairs(prompts: Sequence[list[dict[str, str]]], replies_a: Sequence[str], replies_b: Sequence[str]
                ) -> list[Pair]:
    """Each prompt with A's reply and with B's (an empty reply shown as "." so both sides have a last turn)."""
    def conv(prompt: list[dict[str, str]], text: str) -> list[dict[str, str]]:
        return list(prompt) + [{"role": "assistant", "content": text if text.strip() else "."}]

    return [Pair(conv(p, a), conv(p, b)) for p, a, b in zip(prompts, replies_a, replies_b)]


def head_to_head(judge: Judge, prompts: Sequence[list[dict[str, str]]], replies_a: Sequence[str],
                 replies_b: Sequence[str]) -> dict[str, Any]:
    """A's record against B under `judge` on the same prompts: wins, ties, losses, the win rate (a tie counts half)
    with its 95% interval, and the sign test; the eval stage's judged comparisons and the gates both use it.

    Identical replies are a tie without asking the judge: a reward model scores the same text a hair differently in
    another batch position (padding changes the float sums), which turned 5 of 47 identical pairs of a default run
    into wins and losses -- coin flips counted as evidence."""
    pairs = reply_pairs(prompts, replies_a, replies_b)
    distinct = [i for i, (a, b) in enumerate(zip(replies_a, replies_b)) if a != b]
    verdicts: list[Verdict] = ["tie"] * len(pairs)
    for i, verdict in zip(distinct, judge.compare([pairs[i] for i in distinct]) if distinct else []):
        verdicts[i] = verdict
    wins, losses = verdicts.count("A"), verdicts.count("B")
    ties = len(verdicts) - wins - losses
    interval = win_rate_interval(wins, ties, losses)
    return {"judge": judge.name, "win_rate": interval.value, "ci95": interval.ci95, "n": len(verdicts),
            "wins": wins, "ties": ties, "losses": losses, "sign_test_p": sign_test(wins, losses),
            "verdicts": verdicts}
