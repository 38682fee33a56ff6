"""The one shape every evaluation has: a `Task` takes a `Subject` (a loaded model) and returns a `TaskResult`.

A task is built once with its data (test records, shipped prompts) and settings, then run on every model, so all
models are measured on exactly the same examples. Generation goes through the shared inference engine, so what we
evaluate is what `llmcycle chat` and the server serve.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Sequence

from llmcycle.errors import DataError
from llmcycle.infer.context import model_context, prompt_budget, trim_history
from llmcycle.progress import bar
from llmcycle.records import read_jsonl


@dataclass
class Subject:
    """One model under evaluation: a display name, where it came from, and its loaded engine."""

    name: str
    path: str
    engine: Any  # llmcycle.infer.Engine
    frame: Any = None  # optional: conversation -> the conversation put to the model (a prompt variant's framing)

    def framed(self, conversation: list[dict[str, str]]) -> list[dict[str, str]]:
        return list(conversation) if self.frame is None else self.frame(list(conversation))

    @property
    def model(self) -> Any:
        return self.engine.model

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def backend(self) -> Any:
        """The engine's decode backend, which scores too where it runs packed rows (None for a stand-in engine)."""
        return getattr(self.engine, "backend", None)


@dataclass
class TaskResult:
    """Metrics keyed by name, and one sample row per example.

    A sample row holds the example's shared fields (`probe`, `id`, `prompt`, `reference`, ...) and this model's
    `reply`; rows of the different models are joined on (`probe`, `id`) into samples.jsonl.
    """

    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)


class Task(ABC):
    """A metric or probe. Subclasses set `name` (the probe name users select) and implement `evaluate`."""

    name: ClassVar[str]

    @abstractmethod
    def evaluate(self, subject: Subject) -> TaskResult:
        """Measure one model."""


GROUPING_ROWS = 4  # batches' worth of prompts handed to the engine at once (progress still moves along)


def fit_conversation(tokenizer: Any, messages: list[dict[str, str]], budget: int) -> list[dict[str, str]]:
    """The conversation with its oldest turns dropped (never the system message or the last turn) until its prompt
    fits `budget` tokens, counted exactly; one that cannot fit is left for the engine to refuse."""
    def count(candidate: list[dict[str, str]]) -> int:
        text = tokenizer.apply_chat_template(candidate, add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    return trim_history(messages, count, budget, strict=False)


def generate(subject: Subject, conversations: Sequence[list[dict[str, str]]], settings: Any, batch_size: int,
             desc: str, seeds: Sequence[int] | None = None) -> list[Any]:
    """The engine's next assistant turn for each conversation (engine Completions), with a progress bar; `seeds`
    (one per conversation) gives each sampled reply its own random draws (see `Engine.generate_ids`)."""
    budget = prompt_budget(model_context(subject.model, subject.tokenizer), settings.max_new_tokens)
    fitted = [fit_conversation(subject.tokenizer, subject.framed(c), budget) for c in conversations]
    completions: list[Any] = []
    step = GROUPING_ROWS * batch_size  # the engine sorts each chunk by length into batches that pad little
    with bar(total=len(fitted), desc=f"{subject.name}: {desc}", unit="reply") as progress:
        for start in range(0, len(fitted), step):
            chunk = fitted[start : start + step]
            extra = {} if seeds is None else {"seeds": seeds[start : start + step]}
            completions.extend(subject.engine.chat(chunk, settings, batch_size=batch_size, **extra))
            progress.update(len(chunk))
    return completions


def read_probe_file(name: str, path: str | Path | None, required: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a probe's JSONL file: the one shipped in llmcycle/resources, or a user's own at `path`."""
    file = Path(str(resources.files("llmcycle").joinpath("resources", name))) if path is None else Path(path)
    where = name if path is None else str(path)
    rows = []
    for lineno, row in read_jsonl(file):
        missing = [k for k in required if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise DataError(f"{where}:{lineno}: field {missing[0]!r} must be a non-empty string")
        rows.append(row)
    if not rows:
        raise DataError(f"{where}: holds no probe rows")
    return rows
