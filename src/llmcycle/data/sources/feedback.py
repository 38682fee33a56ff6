"""The server's feedback store (SQLite) as preference records: thumbs become unpaired records (up = desirable),
pairwise choices become paired ones. Both replies of a pair must answer the same conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from llmcycle.artifacts import sha256_file
from llmcycle.data.example import SourceData
from llmcycle.data.sources.preference import check_preference, stats_of, to_examples
from llmcycle.errors import DataError


def prompt_of(messages: list[dict]) -> list[dict[str, str]]:
    return [{"role": m.get("role"), "content": m.get("content")} for m in messages]


def feedback_records(path: Path, limit: Optional[int] = None) -> list[dict[str, Any]]:
    """Preference records from a feedback DB, in feedback order."""
    from llmcycle.feedback.store import FeedbackStore

    if not path.is_file():
        raise DataError(f"{path}: no such feedback database")
    records: list[dict[str, Any]] = []
    with FeedbackStore(path) as store:
        for fb in store.feedback():
            if limit is not None and len(records) >= limit:
                break
            where = f"{path}: feedback {fb.id}"
            chosen = store.response(fb.response_id)
            meta: dict[str, Any] = {"source": "feedback", "feedback_id": fb.id, "model": chosen.model,
                                    "model_hash": chosen.model_hash}
            if fb.comment:
                meta["comment"] = fb.comment
            if fb.kind == "rating":
                row = {"prompt": prompt_of(chosen.messages), "completion": chosen.completion,
                       "label": fb.rating == 1, "meta": meta}
            else:
                rejected = store.response(fb.rejected_id)
                if prompt_of(chosen.messages) != prompt_of(rejected.messages):
                    raise DataError(f"{where}: responses {fb.response_id} and {fb.rejected_id} answer different "
                                    "conversations (the prompts of a pair must agree)")
                row = {"prompt": prompt_of(chosen.messages), "chosen": chosen.completion,
                       "rejected": rejected.completion, "meta": meta}
            records.append(check_preference(row, where))
        counts = store.counts()
    if not records:
        raise DataError(f"{path}: the feedback database holds no ratings or pairwise choices "
                        f"({counts['responses']} responses, no feedback yet)")
    return records


def read_feedback(path: Path, limit: Optional[int] = None) -> SourceData:
    records = feedback_records(path, limit)
    return SourceData("preference", to_examples(records), {path.name: sha256_file(path)}, stats_of(records))
