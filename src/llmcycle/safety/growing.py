"""The classifier's verdict on a text that only grows (a streamed reply), without re-reading what it read before.

A streamed reply is checked each time it gains a word; a full check re-reads the whole reply, so its cost grew
with the reply's length (half the event loop's time at 16 streams). The classifier is linear over hashed features
weighted by 1 + log(count) and L2-normalised, so its logits are S / sqrt(Q) + bias with S = sum of f(count) times
the bucket's weight row and Q = sum of f(count)^2: both are kept for the settled part of the text (everything up to
its last space: a text cut after a space has the features of its two parts plus the word pair across the cut) and
only the words after it are hashed again at each check. The embedding block's input, the sum of the text's token
rows, is additive over the same cut (`safety.embedding`), so it is kept the same way.

The decision is the full check's: the running sums agree with it up to float rounding (about 1e-6), and a text
whose P(harmful) comes within MARGIN of the threshold is decided by a full check (as is a harmful one, so its
evidence is the same). Long texts keep one running sum per classification window.
"""

from __future__ import annotations

import math

import numpy as np

from llmcycle.safety.classifier import (LETTER_WORD, MIN_WORDS, TOKEN, Classifier, Verdict, normalize, weight_rows,
                                       window_bounds)

MARGIN = 0.01  # P(harmful) this close to the threshold is decided by a full check


WEIGHTS = [0.0] + [1.0 + math.log(count) for count in range(1, 1024)]  # f(count) looked up, not recomputed


def weight(count: int) -> float:
    """f(count) = 1 + log(count) for a feature present, 0 for one absent."""
    return WEIGHTS[count] if count < len(WEIGHTS) else 1.0 + math.log(count)


class RunningSums:
    """S, Q and the bucket counts of one growing text's settled part, and its last word (for the pair that
    spans the cut)."""

    def __init__(self, classifier: Classifier):
        self.classifier = classifier
        self.bias = classifier.bias.astype(np.float64)
        self._reset()

    def _reset(self) -> None:
        self.counts: dict[int, int] = {}
        self.sum = np.zeros(len(self.classifier.classes), np.float64)
        self.squares = 0.0
        self.meaning = None if self.classifier.meaning is None else np.zeros(self.classifier.meaning.table.dim,
                                                                              np.float32)
        self.settled = 0  # characters of the text folded in
        self.last_word: str | None = None
        self.letter_words = 0  # LETTER_WORD matches in the settled part
        self.seen = ""  # the text of the last call (a call whose text does not extend it starts afresh)
        self.logits: np.ndarray | None = None
        self.tail: tuple | None = None  # (settled, tail, its features, S and Q with them, row sum) of the last read

    def read(self, text: str) -> tuple[np.ndarray, int]:
        """(logits, LETTER_WORD count) of `text`, which extends every text read before."""
        if not text.startswith(self.seen):
            self._reset()
        if self.logits is not None and len(text) == len(self.seen):
            return self.logits, self.letter_words + self._tail_letters(text)
        cut = text.rfind(" ") + 1
        if cut > self.settled:
            self._fold(text[self.settled:cut])
            self.settled = cut
        tail = text[self.settled:]
        s, q, rows = self.sum, self.squares, self.meaning
        if tail:
            crcs = self.classifier.features.of(tail, self.last_word)
            s, q = self._added(crcs, s, q, keep=False)
            if rows is not None:
                rows = rows + self.classifier.meaning.table.sum(tail)
            self.tail = (self.settled, tail, crcs, s, q, rows)
        logits = s / np.sqrt(q) + self.bias if q > 0 else self.bias
        if rows is not None:
            logits = logits + self.classifier.meaning.logits(rows)
        self.seen, self.logits = text, logits
        return self.logits, self.letter_words + len(LETTER_WORD.findall(tail))

    def _tail_letters(self, text: str) -> int:
        return len(LETTER_WORD.findall(text[self.settled:]))

    def _fold(self, piece: str) -> None:
        """Adds a piece that ends with a space to the settled part. A streamed token usually ends the word the
        last read had as its tail ("cover", then " cover" after it): that word's features and sums are reused."""
        tail = self.tail
        if tail is not None and tail[0] == self.settled and piece[:-1] == tail[1] and piece[-1] == " ":
            _, _, crcs, self.sum, self.squares, self.meaning = tail
            buckets, counts = self.classifier.buckets, self.counts
            for c in crcs:
                counts[c % buckets] = counts.get(c % buckets, 0) + 1
        else:
            self.sum, self.squares = self._added(self.classifier.features.of(piece, self.last_word), self.sum,
                                                 self.squares, keep=True)
            if self.meaning is not None:
                self.meaning = self.meaning + self.classifier.meaning.table.sum(piece)
        words = TOKEN.findall(normalize(piece))
        if words:
            self.last_word = words[-1]
        self.letter_words += len(LETTER_WORD.findall(piece))

    def _added(self, crcs: list[int], s: np.ndarray, q: float, keep: bool) -> tuple[np.ndarray, float]:
        """S and Q with the features `crcs` counted too (and the counts kept when `keep`). A check adds a word
        or two, a few dozen features: plain Python and one product beat numpy's per-call overhead here."""
        if not crcs:
            return s, q
        buckets, counts = self.classifier.buckets, self.counts
        extra: dict[int, int] = {}
        for c in crcs:
            bucket = c % buckets
            extra[bucket] = extra.get(bucket, 0) + 1
        ids, deltas = list(extra), []
        table, size = WEIGHTS, len(WEIGHTS)
        for i, n in extra.items():
            before = counts.get(i, 0)
            after = before + n
            old = table[before] if before < size else weight(before)
            new = table[after] if after < size else weight(after)
            deltas.append(new - old)
            q += new * new - old * old
            if keep:
                counts[i] = after
        return s + np.asarray(deltas) @ weight_rows(self.classifier.weights, ids), q


class GrowingVerdict:
    """`Classifier.verdict` for a text that only grows, with one running sum per classification window."""

    def __init__(self, classifier: Classifier):
        self.classifier = classifier
        self.windows: dict[int, RunningSums] = {}

    def __call__(self, text: str) -> Verdict:
        clf = self.classifier
        rows, letters = [], 0
        for start, end in window_bounds(len(text)):
            sums = self.windows.get(start) or self.windows.setdefault(start, RunningSums(clf))
            logits, count = sums.read(text[start:end])
            rows.append(logits)
            letters = count
        if len(rows) > 1:
            letters = len(LETTER_WORD.findall(text))  # the words of the whole text, not of a window
        if letters < MIN_WORDS:
            return Verdict(None, 0.0, False)
        harm, exps = -1.0, []
        for logits in rows:  # the softmax of a dozen classes: plain floats cost less than numpy's calls here
            values = logits.tolist()
            top = max(values)
            row = [math.exp(v - top) for v in values]
            row_harm = 1.0 - row[clf.safe] / sum(row)
            if row_harm > harm:
                harm, exps = row_harm, row
        if harm >= clf.threshold - MARGIN:
            return clf.verdict(text)  # a full check decides near the threshold, and gives a harmful text's evidence
        exps[clf.safe] = -1.0
        return Verdict(clf.classes[exps.index(max(exps))], harm, False)
