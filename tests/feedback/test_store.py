"""The feedback store keeps replies and the ratings and choices that point at them."""

import pytest

from llmcycle.errors import DataError
from llmcycle.feedback.store import FeedbackStore


def test_ratings_and_pairs_round_trip(tmp_path):
    db = tmp_path / "fb.db"
    with FeedbackStore(db) as store:
        msgs = [{"role": "user", "content": "hi"}]
        store.record_response("r1", "m", msgs, "hello!", {"temperature": 0.7}, "stop", "abc")
        store.record_response("r2", "m", msgs, "go away", {"temperature": 0.7}, "stop", "abc")
        store.add_rating("r1", 1, "nice")
        store.add_rating("r2", -1)
        store.add_preference("r1", "r2")
        with pytest.raises(KeyError):
            store.add_rating("nope", 1)
        with pytest.raises(DataError):
            store.add_rating("r1", 5)
        with pytest.raises(DataError):
            store.add_preference("r1", "r1")
    with FeedbackStore(db) as store:  # reopened: everything acknowledged is there
        assert store.counts() == {"responses": 2, "up": 1, "down": 1, "pairwise": 1}
        pair = next(store.feedback("pairwise"))
        assert (pair.response_id, pair.rejected_id) == ("r1", "r2")
        assert store.response("r1").messages == msgs and store.response("r1").settings == {"temperature": 0.7}


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DataError, match="bad.db"):
        FeedbackStore(bad)
