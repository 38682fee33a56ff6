"""What flows between the data stage's steps: a record plus what splitting and dedup need to know about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class Example:
    """`record` is what gets written; `group` keeps related records in one split (e.g. a Cornell movie);
    `variant` separates views of one conversation (Cornell's both-speakers mode) so dedup never merges them."""

    record: dict[str, Any]
    group: str
    variant: str = ""

    @property
    def is_chat(self) -> bool:
        return "messages" in self.record

    def message_lists(self) -> list[list[dict[str, Any]]]:
        """A chat record's messages, or a preference record's prompt and replies; [] for text."""
        if self.is_chat:
            return [self.record["messages"]]
        return [self.record[k] for k in ("prompt", "chosen", "rejected", "completion") if k in self.record]

    def contents(self) -> Iterator[str]:
        if "text" in self.record:
            yield self.record["text"]
            return
        for messages in self.message_lists():
            for message in messages:
                yield message["content"]

    def joined_text(self) -> str:
        return "\n".join(self.contents())


@dataclass
class StepReport:
    """One cleaning step's effect, as card.json shows it."""

    step: str
    enabled: bool
    removed: int = 0
    changed: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"step": self.step, "enabled": self.enabled, "removed": self.removed, "changed": self.changed}
        out.update(self.details)
        return out


@dataclass
class SourceData:
    """A source reader's result: examples in source order, hashes of the files read, and reader counts."""

    kind: str  # "chat" or "text"
    examples: list[Example]
    files: dict[str, str]
    stats: dict[str, Any] = field(default_factory=dict)
