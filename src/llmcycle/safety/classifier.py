"""The learned moderation classifier: hashed word and character n-grams into a linear softmax over "safe" and the
hazard categories S1-S14 (fastText-style: fast on a CPU, multilingual by construction, a few MB of weights).

The weights ship as package data (`resources/safety/moderation.npz`, built by `python -m
llmcycle.safety.train_classifier`), with the held-out measurements beside them (`moderation_card.json`), so
nothing is downloaded at run time. A missing or corrupt artifact raises `ClassifierError` naming the file: a
moderator never falls back to allowing everything.

Long texts are decided on bounded windows (head, tail and evenly spaced windows in between, at most
`MAX_WINDOWS` of `WINDOW` characters), so the cost of a 100,000-character prompt is fixed; a harmful passage
anywhere in the windows decides the whole text. A prompt is also read in overlapping segments of
`SEGMENT_WORDS` words (`prompt_verdict`): the features of a whole window are averaged, so two sentences of small
talk before a harmful request used to hide it (blocked 71% of the held-out English harmful requests alone, 16%
of them after two chat turns; docs/safety-model-card.md). A prompt's leading framing ("Can you help me", "how do
I") is taken off first (`framing.request_core`), in training as well, so politeness is no evidence either way.

An artifact may also carry a meaning block (`Meaning`: weights on the normalised mean of a word-embedding table's
token rows, `safety.embedding`); it then loads only with the very table it was trained with. The shipped weights
have none: it lost to the n-grams alone on the development split (docs/safety-model-card.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from llmcycle.errors import ArtifactError
from llmcycle.safety.embedding import EmbeddingError, WordTable, load_table
from llmcycle.safety.framing import request_core
from llmcycle.safety.toxicity import WORD as TERM_WORD
from llmcycle.safety.toxicity import ToxicityScorer

ARTIFACT = "resources/safety/moderation.npz"
GLOSS = "resources/safety/gloss.tsv"
CARD = "resources/safety/moderation_card.json"
FORMAT = "llmcycle-moderation-1"
WINDOW = 1000  # characters per window of a long text
SINGLE = 2000  # texts up to this long are one window
MAX_WINDOWS = 16
TOKEN = re.compile(r"\w+", re.UNICODE)
MAX_WORD = 24  # longer "words" (hashes, base64) add no char n-grams


class ClassifierError(ArtifactError):
    """The moderation classifier's weights are missing or unreadable."""


def normalize(text: str) -> str:
    """Lower case, compatibility forms folded (full-width letters, ligatures), accents kept: they carry meaning."""
    return unicodedata.normalize("NFKC", text).lower()


def read_gloss(text: str) -> dict[str, str]:
    """word<TAB>english lines (comments start with #)."""
    pairs = (line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {word: english for word, english in pairs}


def feature_strings(text: str, scorer: ToxicityScorer | None = None, gloss: dict[str, str] | None = None) -> list[str]:
    """Words, word pairs, character 3-5-grams of each word (with boundary marks), toxicity-list levels, and the
    words and pairs of the English-glossed sequence where a gloss applies (shared with the English features)."""
    lowered = normalize(text)
    words = TOKEN.findall(lowered)
    feats = [f"w {w}" for w in words]
    feats += [f"b {a} {b}" for a, b in zip(words, words[1:])]
    if gloss:
        glossed = [gloss.get(w, w) for w in words]
        changed = [g != w for g, w in zip(glossed, words)]
        feats += [f"w {g}" for g, c in zip(glossed, changed) if c]
        feats += [f"b {a} {b}" for a, b, c, d in zip(glossed, glossed[1:], changed, changed[1:]) if c or d]
    for word in words:
        if len(word) > MAX_WORD:
            continue
        marked = f"<{word}>"
        for n in (3, 4, 5):
            feats += [marked[i:i + n] for i in range(len(marked) - n + 1)]
    if scorer is not None:
        feats += [f"t {level}" for level in map(scorer.severity, TERM_WORD.findall(lowered)) if level]
    return feats


def hashed(feats: Sequence[str], buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket ids and log-scaled, L2-normalised weights (crc32: stable across processes, unlike hash())."""
    return bucketed([crc(f) for f in feats], buckets)


def crc(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8"))


def bucketed(crcs: Sequence[int], buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """`hashed` from the features' crc32s."""
    if not crcs:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    tally = Counter(c % buckets for c in crcs)  # np.unique's sort would release the GIL (see `weight_rows`)
    uniq = sorted(tally)
    vals = 1.0 + np.log(np.array([tally[i] for i in uniq], np.float32))
    return np.array(uniq, np.int64), vals / np.linalg.norm(vals)


def weight_rows(weights: np.ndarray, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """weights[ids] without releasing Python's lock. Why: numpy's fancy indexing releases the GIL, and a thread
    waiting to take it back waits for the other thread's switch interval. Moderation runs on a server's event loop
    beside a decoding thread that is mostly in Python, so each indexing waited: a 4,000-character prompt's check
    took 44-48 ms beside a busy thread against 0.8 ms alone (bench/moderation_contention_bench.py). A row at a time
    (an int index is a view) never lets it go."""
    rows = ids.tolist() if isinstance(ids, np.ndarray) else ids
    return np.array([weights[i] for i in rows], dtype=weights.dtype).reshape(len(rows), weights.shape[1])


class FeatureHashes:
    """The crc32s of a text's features, the multiset `feature_strings` lists, from memos per word and per word pair.

    A streamed reply is classified again each time it gains a word, so nearly all of its words and pairs were seen
    by the check before: looking their hashes up instead of rebuilding and hashing a dozen strings per word is part
    of what halved the server's moderation time per token (docs/serving.md). The memos are bounded (cleared when
    full)."""

    LIMIT = 1 << 14  # distinct words, and pairs, whose hashes are kept

    def __init__(self, scorer: ToxicityScorer | None, gloss: dict[str, str]):
        self.scorer, self.gloss = scorer, gloss
        self.words: dict[str, tuple[int, ...]] = {}
        self.pairs: dict[tuple[str, str], int] = {}

    def of(self, text: str, before: str | None = None) -> list[int]:
        """The features of `text`; with `before`, the last word of the text it continues, also the word pairs
        that span the join (so a text's features are the sum of its pieces' when it is cut after a space)."""
        lowered = normalize(text)
        words = TOKEN.findall(lowered)
        out: list[int] = []
        for word in words:
            out += self.words.get(word) or self._word(word)
        if before is not None and words:
            words = [before, *words]
        out += [self._pair(a, b) for a, b in zip(words, words[1:])]
        if self.gloss:
            glossed = [self.gloss.get(w, w) for w in words]
            changed = [g != w for g, w in zip(glossed, words)]
            out += [self._pair(a, b) for a, b, c, d in zip(glossed, glossed[1:], changed, changed[1:]) if c or d]
        if self.scorer is not None:
            out += [crc(f"t {level}") for level in map(self.scorer.severity, TERM_WORD.findall(lowered)) if level]
        return out

    def _word(self, word: str) -> tuple[int, ...]:
        """A word's own features: itself, its gloss (where one applies) and its character 3-5-grams."""
        feats = [f"w {word}"]
        glossed = self.gloss.get(word, word) if self.gloss else word
        if glossed != word:
            feats.append(f"w {glossed}")
        if len(word) <= MAX_WORD:
            marked = f"<{word}>"
            for n in (3, 4, 5):
                feats += [marked[i:i + n] for i in range(len(marked) - n + 1)]
        if len(self.words) >= self.LIMIT:
            self.words.clear()
        hashes = self.words[word] = tuple(crc(f) for f in feats)
        return hashes

    def _pair(self, a: str, b: str) -> int:
        value = self.pairs.get((a, b))
        if value is None:
            if len(self.pairs) >= self.LIMIT:
                self.pairs.clear()
            value = self.pairs[(a, b)] = crc(f"b {a} {b}")
        return value


def windows(text: str) -> list[str]:
    """The parts of `text` that are classified: all of a short text; head, tail and spread-out windows of a long one
    (deterministic, so the same prompt always gets the same decision)."""
    return [text[start:end] for start, end in window_bounds(len(text))]


def window_bounds(length: int) -> list[tuple[int, int]]:
    """(start, end) of each of `windows`' parts of a text of `length` characters."""
    if length <= SINGLE:
        return [(0, length)]
    starts = list(range(0, length - WINDOW // 2, WINDOW - 100))
    if len(starts) > MAX_WINDOWS:
        head, tail = starts[:4], starts[-4:]
        middle = starts[4:-4]
        step = len(middle) / (MAX_WINDOWS - 8)
        starts = head + [middle[int(i * step)] for i in range(MAX_WINDOWS - 8)] + tail
    bounds = [(start, min(start + WINDOW, length)) for start in starts]
    # the last window reaches the end: its start is at least length - WINDOW * 1.4, so it grows to at most 1,400
    # characters (a fixed window at the end would leave up to 400 trailing characters unread for some lengths)
    bounds[-1] = (bounds[-1][0], length)
    return bounds


MIN_WORDS = 3
SPACED = re.compile(r"\S+")
SEGMENT_WORDS = 16  # a request of up to about 10 words sits in a segment with few other words
SEGMENT_STRIDE = 8
# a segment is short and read without its context, so it must be surer than a whole text: at 0.9 the held-out
# benign prompts were blocked as often as without segments (0.041), at 0.8 4.6%
SEGMENT_THRESHOLD = 0.9


def segments(text: str) -> list[str]:
    """Overlapping runs of `SEGMENT_WORDS` words of each classification window (none for a window that short):
    at most about 20 per window, so the cost stays bounded like the windows'."""
    out = []
    for window in windows(text):
        spans = [m.span() for m in SPACED.finditer(window)]
        if len(spans) <= SEGMENT_WORDS:
            continue
        for first in range(0, len(spans) - SEGMENT_WORDS + SEGMENT_STRIDE, SEGMENT_STRIDE):
            last = min(first + SEGMENT_WORDS, len(spans)) - 1
            out.append(window[spans[first][0]:spans[last][1]])
    return out
LETTER_WORD = re.compile(r"[^\W\d_]{2,}|[^\W\d_]\b")


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one text: the most likely hazard category, P(harmful) and whether it passes
    the threshold."""

    category: str | None
    harm: float
    harmful: bool


NOT_HARMFUL = Verdict(None, 0.0, False)


def enough_words(text: str) -> bool:
    return len(LETTER_WORD.findall(text)) >= MIN_WORDS


@dataclass(frozen=True)
class Meaning:
    """The embedding block of a classifier: the word table, the weight rows of its normalised mean embedding
    and the scale the block had in training (it sets how strongly the L2 penalty holds those rows)."""

    table: WordTable
    weights: np.ndarray  # (table dim, classes)
    scale: float

    def logits(self, total: np.ndarray) -> np.ndarray:
        """The block's logits for a text whose token rows sum to `total` (none for a text without words)."""
        norm = float(np.linalg.norm(total))
        return (total @ self.weights) * (self.scale / norm) if norm > 0 else np.zeros(self.weights.shape[1])


class Classifier:
    def __init__(self, weights: np.ndarray, bias: np.ndarray, classes: list[str], threshold: float, path: str,
                 gloss: dict[str, str], meaning: Meaning | None = None):
        self.weights, self.bias, self.classes, self.gloss = weights, bias, classes, gloss
        self.threshold, self.path, self.meaning = threshold, path, meaning
        self.buckets = weights.shape[0]
        self.safe = classes.index("safe")
        self.scorer = ToxicityScorer()
        self.features = FeatureHashes(self.scorer, gloss)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over `classes` for each text (no windowing)."""
        logits = np.empty((len(texts), len(self.classes)), np.float32)
        for row, text in enumerate(texts):
            ids, vals = bucketed(self.features.of(text), self.buckets)
            logits[row] = vals @ weight_rows(self.weights, ids) + self.bias
            if self.meaning is not None:
                logits[row] += self.meaning.logits(self.meaning.table.sum(text))
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def verdict(self, text: str) -> Verdict:
        """The decision for `text`, from its most harmful window. Under MIN_WORDS words there is too little
        evidence for a category (a streamed reply is moderated from its first piece: "I" or "<t" must not
        decide anything), so such a text is never harmful here; personal data is still found by the patterns."""
        return self._windows_verdict(text) if enough_words(text) else NOT_HARMFUL

    def _windows_verdict(self, text: str) -> Verdict:
        probs = self.probabilities(windows(text))
        harm = 1.0 - probs[:, self.safe]
        worst = int(np.argmax(harm))
        row = probs[worst].copy()
        row[self.safe] = -1.0
        category = self.classes[int(np.argmax(row))]
        return Verdict(category, float(harm[worst]), bool(harm[worst] >= self.threshold))

    def prompt_verdict(self, text: str) -> Verdict:
        """`verdict` of the request's core (`framing.request_core`: as in training, its leading "Can you help
        me", "how do I" and the like taken off; the word count is the whole prompt's), and a segment surer than
        `SEGMENT_THRESHOLD` decides too: prompts are what a user writes, and padding a request with harmless text
        is the cheapest way around a classifier that averages. Replies are judged by `verdict` alone (a streamed
        reply's checks stay incremental)."""
        if not enough_words(text):
            return NOT_HARMFUL
        core = request_core(text)
        whole = self._windows_verdict(core)
        parts = [] if whole.harmful else segments(core)
        if not parts:
            return whole
        probs = self.probabilities(parts)
        harm = 1.0 - probs[:, self.safe]
        worst = int(np.argmax(harm))
        if harm[worst] < SEGMENT_THRESHOLD:
            return whole
        row = probs[worst].copy()
        row[self.safe] = -1.0
        return Verdict(self.classes[int(np.argmax(row))], float(harm[worst]), True)


def _fail(path: Path, what: str) -> ClassifierError:
    return ClassifierError(f"{path}: moderation classifier {what} (rebuild it: python -m "
                           f"llmcycle.safety.train_classifier --out {path.parent})")


# what reading a damaged .npz raises: a missing file, a truncated zip, a bad member, a cut-off compressed stream
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def load(path: str | Path) -> Classifier:
    """Read and verify an artifact: format tag, shapes, class list and the weights' sha256."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "artifact not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            weights = np.asarray(data["weights"])
            bias = np.asarray(data["bias"], np.float32)
            dense = np.asarray(data["dense"]) if "dense" in data.files else None
    except UNREADABLE as exc:
        raise _fail(path, f"artifact is corrupt ({type(exc).__name__})") from None
    if meta.get("format") != FORMAT:
        raise _fail(path, f"artifact has format {meta.get('format')!r}, expected {FORMAT!r}")
    classes = list(meta.get("classes", []))
    if weights.ndim != 2 or weights.shape[1] != len(classes) or bias.shape != (len(classes),) or "safe" not in classes:
        raise _fail(path, f"artifact has inconsistent shapes {weights.shape}/{bias.shape} for {len(classes)} classes")
    if weights_digest(weights, dense) != meta.get("weights_sha256"):
        raise _fail(path, "weights do not match their checksum (file damaged)")
    return Classifier(weights.astype(np.float32), bias, classes, float(meta["threshold"]), str(path),
                      dict(meta.get("gloss", {})), _meaning(path, meta, dense, len(classes)))


def weights_digest(weights: np.ndarray, dense: np.ndarray | None) -> str:
    """sha256 of the n-gram weights and, where there is one, the embedding block's weights."""
    digest = hashlib.sha256(weights.tobytes())
    if dense is not None:
        digest.update(dense.tobytes())
    return digest.hexdigest()


def _meaning(path: Path, meta: dict, dense: np.ndarray | None, classes: int) -> Meaning | None:
    """The embedding block an artifact names, its table checked against the identity it recorded."""
    record = meta.get("embedding")
    if record is None and dense is None:
        return None
    if record is None or dense is None:
        raise _fail(path, "artifact has embedding weights without their table's record, or the reverse")
    try:
        table = load_table(record)
    except EmbeddingError as exc:
        raise ClassifierError(f"{path}: {exc}") from None
    if dense.shape != (table.dim, classes) or not isinstance(record.get("scale"), (int, float)):
        raise _fail(path, f"artifact's embedding weights {dense.shape} (scale {record.get('scale')!r}) do not fit "
                          f"the table ({table.dim} dims)")
    return Meaning(table, dense.astype(np.float32), float(record["scale"]))


def artifact_path() -> Path:
    return Path(str(resources.files("llmcycle").joinpath(ARTIFACT)))


@lru_cache(maxsize=1)
def default_classifier() -> Classifier:
    """The shipped classifier, loaded once per process."""
    return load(artifact_path())


def card() -> dict:
    """The shipped classifier's held-out measurements (what eval reports beside every safety figure)."""
    path = Path(str(resources.files("llmcycle").joinpath(CARD)))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ClassifierError(f"{path}: moderation classifier card unreadable ({type(exc).__name__})") from None


def accuracy_summary() -> dict:
    """{precision, recall, false_block_rate, n} of the shipped classifier on its held-out set."""
    overall = card()["heldout"]["overall"]
    return {k: overall[k] for k in ("precision", "recall", "false_block_rate", "n")}
