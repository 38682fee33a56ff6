"""Real feedback is messy: rows that cannot become training records are skipped and counted by reason, and an
empty reply is kept as a legitimate rejected one."""

from __future__ import annotations

import pytest

from llmcycle.data.sources.feedback import read_feedback
from llmcycle.errors import DataError
from llmcycle.feedback.store import FeedbackStore

HI = [{"role": "user", "content": "hi"}]
BYE = [{"role": "user", "content": "bye"}]


def test_bad_rows_are_skipped_and_counted_empty_replies_kept_as_rejected(tmp_path):
    db = tmp_path / "fb.db"
    with FeedbackStore(db) as store:
        store.record_response("good", "m", HI, "hello!", {}, "stop")
        store.record_response("empty", "m", HI, "", {}, "length")
        store.record_response("other", "m", BYE, "see you", {}, "stop")
        store.add_rating("good", 1)
        store.add_rating("empty", -1)  # said nothing, thumbs down: a fine undesirable example
        store.add_rating("empty", 1)  # an empty reply cannot be a desirable one
        store.add_preference("good", "empty")  # chosen over saying nothing: kept
        store.add_preference("good", "other")  # two different conversations
    data = read_feedback(db)
    records = [e.record for e in data.examples]
    assert len(records) == 3
    assert {"completion": [{"role": "assistant", "content": ""}], "label": False}.items() <= records[1].items()
    assert records[2]["rejected"] == [{"role": "assistant", "content": ""}]
    assert data.stats["skipped"] == 2
    reasons = data.stats["skipped_reasons"]
    assert sum(reasons.values()) == 2 and any("different conversations" in r for r in reasons)
    assert any("non-empty string" in r for r in reasons)


def test_nothing_usable_names_why(tmp_path):
    db = tmp_path / "fb.db"
    with FeedbackStore(db) as store:
        store.record_response("empty", "m", HI, "", {}, "length")
        store.add_rating("empty", 1)
    with pytest.raises(DataError, match="no ratings or pairwise choices usable.*skipped: 1 x"):
        read_feedback(db)


def test_the_data_card_counts_the_skipped_rows(cli, tmp_path):
    import json

    db = tmp_path / "fb.db"
    with FeedbackStore(db) as store:
        for i in range(12):
            store.record_response(f"r{i}", "m", [{"role": "user", "content": f"question {i}"}], f"answer {i}", {},
                                  "stop")
            store.add_rating(f"r{i}", 1 if i % 2 else -1)
        store.record_response("empty", "m", HI, "", {}, "length")
        store.add_rating("empty", 1)
    code, _, err = cli("data", "--source", "feedback", "--path", db, "--out", tmp_path / "d")
    assert code == 0, err
    card = json.loads((tmp_path / "d" / "card.json").read_text())
    assert card["source"]["skipped"] == 1 and card["records_read"] == 12
    assert "1 source rows skipped" in (tmp_path / "d" / "card.md").read_text()
