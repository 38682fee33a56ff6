"""Conversation memory: the whole transcript is kept; what the model sees is a window of it that fits its context.

The window keeps the system message and the newest turns, dropping the oldest turns first, so that the prompt
plus `max_new_tokens` fits the context (and, optionally, at most `max_turns` earlier turns are shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from llmcycle.infer.context import trim_history


@dataclass
class ChatMemory:
    system: str | None = None
    max_turns: int | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user, assistant)

    def add(self, user: str, assistant: str) -> None:
        self.turns.append((user, assistant))

    def reset(self) -> None:
        self.turns.clear()

    def transcript(self) -> list[dict[str, str]]:
        """Every message so far, system first."""
        return self._messages(self.turns)

    def _messages(self, turns: Sequence[tuple[str, str]], pending: str | None = None) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in turns:
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": assistant})
        if pending is not None:
            messages.append({"role": "user", "content": pending})
        return messages

    def window(self, pending: str, count_tokens: Callable[[list[dict[str, str]]], int], budget: int
               ) -> list[dict[str, str]]:
        """System + the newest turns that fit `budget` tokens + the pending user message."""
        turns = self.turns[-self.max_turns:] if self.max_turns else list(self.turns)
        if self.max_turns == 0:
            turns = []
        return trim_history(self._messages(turns, pending), count_tokens, budget, strict=True)
