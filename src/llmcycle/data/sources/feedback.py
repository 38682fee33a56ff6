"""The server's feedback store (SQLite) as preference records: thumbs become unpaired records (up = desirable),
pairwise choices become paired ones. Both replies of a pair must answer the same conversation. A row that cannot
become a training record is skipped and counted, by reason, in the data card (`skipped_reasons`); an empty reply
is kept as a legitimate rejected one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

from llmcycle.artifacts import sha256_file
from llmcycle.data.example import SourceData
from llmcycle.data.sources.preference import check_preference, stats_of, to_examples
from llmcycle.errors import DataError
from llmcycle.progress import say


def prompt_of(messages: list[dict]) -> list[dict[str, str]]:
    return [{"role": m.get("role"), "content": m.get("content")} for m in messages]


def feedback_records(path: Path, limit: Optional[int] = None,
                     skipped: Optional[Counter] = None) -> list[dict[str, Any]]:
    """Preference records from a feedback DB, in feedback order; rows that cannot be records are counted by reason
    in `skipped`: real feedback is messy (a reply the store lost, a pair answering two conversations), and one such
    row must not block the rest."""
    from llmcycle.feedback.store import FeedbackStore

    if not path.is_file():
        raise DataError(f"{path}: no such feedback database")
    records: list[dict[str, Any]] = []
    skipped = Counter() if skipped is None else skipped
    with FeedbackStore(path) as store:
        for fb in store.feedback():
            if limit is not None and len(records) >= limit:
                break
            where = f"{path}: feedback {fb.id}"
            try:
                records.append(check_preference(_row(store, fb, where), where))
            except DataError as exc:
                skipped[str(exc).removeprefix(f"{where}: ")] += 1
        counts = store.counts()
    if not records:
        why = f"; skipped: {_reasons(skipped)}" if skipped else ""
        raise DataError(f"{path}: the feedback database holds no ratings or pairwise choices usable as training "
                        f"data ({counts['responses']} responses{why})")
    return records


def _row(store: Any, fb: Any, where: str) -> dict[str, Any]:
    chosen = store.response(fb.response_id)
    if chosen is None:
        raise DataError(f"{where}: its reply is not in the store")
    meta: dict[str, Any] = {"source": "feedback", "feedback_id": fb.id, "model": chosen.model,
                            "model_hash": chosen.model_hash}
    if fb.comment:
        meta["comment"] = fb.comment
    if fb.kind == "rating":
        return {"prompt": prompt_of(chosen.messages), "completion": chosen.completion, "label": fb.rating == 1,
                "meta": meta}
    rejected = store.response(fb.rejected_id)
    if rejected is None:
        raise DataError(f"{where}: its rejected reply is not in the store")
    if prompt_of(chosen.messages) != prompt_of(rejected.messages):
        raise DataError(f"{where}: the two replies of a pair answer different conversations")
    return {"prompt": prompt_of(chosen.messages), "chosen": chosen.completion, "rejected": rejected.completion,
            "meta": meta}


def _reasons(skipped: Counter) -> str:
    return "; ".join(f"{n} x {reason}" for reason, n in skipped.most_common())


def read_feedback(path: Path, limit: Optional[int] = None) -> SourceData:
    skipped: Counter = Counter()
    records = feedback_records(path, limit, skipped)
    stats = {**stats_of(records), "skipped": sum(skipped.values()), "skipped_reasons": dict(skipped)}
    if skipped:
        say(f"data: {path}: skipped {stats['skipped']} feedback rows that cannot be training data: "
            f"{_reasons(skipped)}")
    return SourceData("preference", to_examples(records), {path.name: sha256_file(path)}, stats)
