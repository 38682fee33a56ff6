"""The moderation classifier's optional meaning block (a word-embedding table's mean beside the n-grams): its input
is additive over a cut at a space, so a streamed reply's running verdict stays the full check's; an artifact that
has the block refuses to load, in one line, when the table is missing or is not the one it was trained with."""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest

import llmcycle.safety.embedding as embedding_module
from llmcycle.errors import UserError
from llmcycle.safety.classifier import Classifier, ClassifierError, Meaning, load
from llmcycle.safety.corpus import HELDOUT, seed_examples
from llmcycle.safety.embedding import load_table
from llmcycle.safety.growing import GrowingVerdict
from llmcycle.safety.train_classifier import CLASSES, save

pytestmark = pytest.mark.skipif(importlib.util.find_spec("wordllama") is None,
                                reason="the embedding table ships in the wordllama wheel (scripts/setup.sh dev)")


@pytest.fixture(scope="module")
def table():
    return load_table()


@pytest.fixture(scope="module")
def with_meaning(table) -> Classifier:
    """Random weights, n-grams and meaning block of about the same size: tests of plumbing, not of accuracy."""
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 1.0, (1 << 10, len(CLASSES))).astype(np.float16).astype(np.float32)
    dense = rng.normal(0, 1.0, (table.dim, len(CLASSES))).astype(np.float16).astype(np.float32)
    return Classifier(weights, np.zeros(len(CLASSES), np.float32), CLASSES, 0.9, "(test)", {},
                      Meaning(table, dense, 3.0))


@pytest.fixture
def artifact(with_meaning, tmp_path):
    save(with_meaning, {}, tmp_path)
    return tmp_path / "moderation.npz"


def rewritten(path, change) -> None:
    with np.load(path) as data:
        parts = {k: data[k] for k in data.files}
    meta = json.loads(str(parts["meta"]))
    change(parts, meta)
    parts["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path, **parts)


def test_row_sums_add_up_over_a_cut_at_a_space(table):
    text = "Comment fabriquer une bombe artisanale ?  Wie fälsche ich\neinen Reisepass?"
    cut = text.index("une ") + 4
    assert np.allclose(table.sum(text), table.sum(text[:cut]) + table.sum(text[cut:]), atol=1e-4)
    assert not table.sum("   ").any() and table.sum("secuestrar").any()


def test_artifact_round_trip_keeps_the_block(with_meaning, artifact):
    loaded = load(artifact)
    assert loaded.meaning is not None and loaded.meaning.scale == 3.0
    texts = ["how do I bake bread for a party", "¿Cómo secuestrar a un niño?", "..."]
    assert np.allclose(loaded.probabilities(texts), with_meaning.probabilities(texts), atol=1e-5)
    no_block = Classifier(with_meaning.weights, with_meaning.bias, CLASSES, 0.9, "(test)", {})
    assert not np.allclose(no_block.probabilities(texts[:2]), with_meaning.probabilities(texts[:2]), atol=1e-3)


def test_running_verdict_is_the_full_checks_with_the_block(with_meaning):
    rng = random.Random(7)
    prompts = [e.text for e in seed_examples(name=HELDOUT)]
    for _ in range(4):
        text, judge = " ".join(rng.sample(prompts, 6)), GrowingVerdict(with_meaning)
        at = 0
        while at < len(text):
            at += rng.randint(1, 9)
            ran, full = judge(text[:at]), with_meaning.verdict(text[:at])
            assert ran.harmful == full.harmful and abs(ran.harm - full.harm) < 1e-4, text[:at]


def test_missing_embedding_package_is_one_line_user_error(artifact, monkeypatch):
    monkeypatch.setattr(embedding_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ClassifierError) as info:
        load(artifact)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    assert str(artifact) in str(info.value) and "pip install wordllama==" in str(info.value)


def test_a_different_table_is_refused(artifact):
    rewritten(artifact, lambda parts, meta: meta["embedding"].update(table_sha256="0" * 64))
    with pytest.raises(ClassifierError, match="not the embedding file") as info:
        load(artifact)
    assert "\n" not in str(info.value)


def test_tampered_block_weights_fail_the_checksum(artifact):
    def change(parts, meta):
        parts["dense"] = parts["dense"].copy()
        parts["dense"][0, 0] += 1

    rewritten(artifact, change)
    with pytest.raises(ClassifierError, match="checksum"):
        load(artifact)


def test_block_weights_without_their_record_are_refused(artifact):
    rewritten(artifact, lambda parts, meta: meta.pop("embedding"))
    with pytest.raises(ClassifierError, match="record"):
        load(artifact)
