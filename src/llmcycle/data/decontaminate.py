"""Which training records contain an eval item: benchmark questions, probe prompts, test conversations.

Texts are normalised as GPT-3 and OLMo report (lower case, punctuation stripped, whitespace collapsed) and compared
three ways, each a pass over numpy arrays of 64-bit n-gram hashes:
- exact: a training message or record equal to an eval text or question (the fast path: a hash lookup);
- long overlap: a training record sharing one 13-gram with an eval text (GPT-3's rule), n-grams that occur in more
  than `boilerplate_items` eval items (templates such as "question ... answer") left out;
- near copies: a training record holding at least `min_coverage` of an eval text's short n-grams (5-grams; 3-grams
  within one message for texts under 60 words), which survives the few edited or added words that break every
  13-gram of a short item. Test conversations (`EvalSet.documents`) are matched as a whole: by exact match or
  5-gram coverage only, as conversations of one source share task prompts and everyday phrases.
Eval texts under `min_words` words are checked by the exact path only: their n-grams are everyday phrases.
"""

from __future__ import annotations

import hashlib
from itertools import chain
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from llmcycle.data.eval_sets import EvalSet, record_texts

MIX = np.uint64(0x9E3779B97F4A7C15)
FILTER_BITS = 25
FILTER_MASK = np.uint64((1 << FILTER_BITS) - 1)
OWNER_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
# ASCII punctuation and the typographic marks common in benchmark text, each to a space (str.translate is C-fast)
PUNCT = str.maketrans({c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u2018\u2019\u201c\u201d\u2026\u2013\u2014\u00ab\u00bb"})


def normalise(text: str) -> list[str]:
    """Lower case, punctuation to spaces, whitespace collapsed: the words compared."""
    return text.lower().translate(PUNCT).split()


def text_key(words: Sequence[str]) -> str:
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=12).hexdigest()


@dataclass(frozen=True)
class DecontamConfig:
    ngram: int = 13  # the long-overlap rule's n (GPT-3, OLMo)
    short_ngram: int = 5  # the near-copy rule's n for texts of at least `long_words` words
    tiny_ngram: int = 3  # ... and for shorter ones, whose few 5-grams a handful of edits would all break
    long_words: int = 60
    min_coverage: float = 0.5  # share of an eval text's short n-grams a record must hold
    min_words: int = 8  # shorter eval texts: exact match only
    min_exact_words: int = 3  # shorter texts are not even matched exactly ("hi there")
    boilerplate_items: int = 10


class Vocabulary:
    """Random 64-bit codes per word, grown as new words come (a train word no eval text has can never match)."""

    def __init__(self, seed: int = 0) -> None:
        self.ids: dict[str, int] = {}
        self.rng = np.random.default_rng(seed)
        self.codes = np.zeros(0, dtype=np.uint64)

    def encode(self, flat: list[str]) -> np.ndarray:
        ids = self.ids
        for word in set(flat).difference(ids):
            ids[word] = len(ids)
        if len(ids) > len(self.codes):
            grow = self.rng.integers(1, 2**63, size=len(ids) - len(self.codes), dtype=np.uint64)
            self.codes = np.concatenate([self.codes, grow])
        index = np.fromiter(map(ids.__getitem__, flat), dtype=np.int64, count=len(flat))
        return self.codes[index] if len(flat) else np.zeros(0, np.uint64)


class Corpus:
    """Docs as one array of word codes, so n-gram hashes come from numpy over all docs at once."""

    def __init__(self, docs: list[list[str]], vocab: Vocabulary) -> None:
        self.lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        self.codes = vocab.encode(list(chain.from_iterable(docs)))
        self.owner = np.repeat(np.arange(len(docs)), self.lengths)

    def ngrams(self, n: int, docs: np.ndarray | None = None, groups: np.ndarray | None = None,
               distinct: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(hash, owner) of each n-gram per doc (each distinct one once unless `distinct` is off), of the docs the
        boolean mask `docs` selects; with `groups` (doc -> group) n-grams run across a group's docs, owned by it."""
        owner_all = self.owner if groups is None else groups[self.owner]
        starts = len(self.codes) - n + 1
        if starts <= 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        h = np.zeros(starts, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):  # uint64 wraps: a polynomial hash over random word codes
                h = h * MIX + self.codes[k:k + starts]
            owner = owner_all[:starts]
            valid = owner == owner_all[n - 1:]
            if docs is not None:
                valid &= docs[owner]
            h, owner = h[valid], owner[valid]
            if not distinct:
                return h, owner
            _, first = np.unique(h + owner.astype(np.uint64) * OWNER_MIX, return_index=True)
        return h[first], owner[first]


@dataclass
class NgramTable:
    """One rule's eval side: distinct n-gram hashes (boilerplate left out) sorted, their items, and a Bloom filter."""

    n: int
    uniq: np.ndarray
    first: np.ndarray
    counts: np.ndarray
    owners: np.ndarray
    totals: np.ndarray  # distinct n-grams per eval item
    bits: np.ndarray

    @classmethod
    def build(cls, evals: Corpus, n: int, chosen: np.ndarray, max_items: int) -> "NgramTable":
        e_hash, e_owner = evals.ngrams(n, chosen)
        order = np.argsort(e_hash, kind="stable")
        e_hash, e_owner = e_hash[order], e_owner[order]
        uniq, first, counts = np.unique(e_hash, return_index=True, return_counts=True)
        keep = counts <= max_items  # n-grams of many items are templates ("question ... answer"), not content
        return cls.of(n, uniq[keep], first[keep], counts[keep], e_owner,
                      np.bincount(e_owner, minlength=len(evals.lengths)))

    @classmethod
    def of(cls, n: int, uniq: np.ndarray, first: np.ndarray, counts: np.ndarray, owners: np.ndarray,
           totals: np.ndarray) -> "NgramTable":
        """The table from its arrays (as built or as cached), with its filter rebuilt (cheaper than storing it)."""
        bits = np.zeros(1 << FILTER_BITS, dtype=bool)  # a one-hash Bloom filter: most train n-grams stop here
        bits[(uniq & FILTER_MASK).astype(np.int64)] = True
        return cls(n, uniq, first, counts, owners, totals, bits)

    def matches(self, t_hash: np.ndarray, t_owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(train owner, eval item) once per distinct shared n-gram."""
        maybe = self.bits[(t_hash & FILTER_MASK).astype(np.int64)]
        t_hash, t_owner = t_hash[maybe], t_owner[maybe]
        if not len(self.uniq) or not len(t_hash):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.uniq, t_hash), len(self.uniq) - 1)
        hit = self.uniq[pos] == t_hash
        starts, sizes = self.first[pos[hit]], self.counts[pos[hit]]
        rows = np.repeat(t_owner[hit], sizes)
        offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        cols, hashes = self.owners[np.repeat(starts, sizes) + offsets], np.repeat(t_hash[hit], sizes)
        with np.errstate(over="ignore"):  # a record repeating a shared n-gram counts it once
            key = hashes + (rows.astype(np.uint64) * OWNER_MIX) ^ cols.astype(np.uint64)
        _, first = np.unique(key, return_index=True)
        return rows[first], cols[first]


@dataclass
class Contamination:
    """What the check found: per eval set, its contaminated items and the training records holding them."""

    flagged: dict[int, list[str]] = field(default_factory=dict)  # train record index -> ["set:item id (rule)"]
    per_set: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_records: int = 0

    @property
    def records(self) -> list[int]:
        return sorted(self.flagged)

    def summary(self) -> dict[str, Any]:
        """The data card's section: per eval set, contaminated items and training records, plus the totals."""
        return {"train_records_checked": self.train_records, "train_records_flagged": len(self.flagged),
                "eval_sets": self.per_set}


class EvalIndex:
    """The eval side, built once and checked against any number of training sets (`shipped_index` keeps the shipped
    sets' one on disk)."""

    def __init__(self, eval_sets: Sequence[EvalSet], cfg: DecontamConfig = DecontamConfig()) -> None:
        self.cfg = cfg
        self.sizes = {s.name: len(s.items) for s in eval_sets}
        words = [(s.name, item_id, normalise(text)) for s in eval_sets for item_id, text in s.items]
        self.items = [(name, item_id) for name, item_id, _ in words]
        self.exact = exact_keys(eval_sets, words, cfg)
        self.vocab = Vocabulary()
        evals = Corpus([w for _, _, w in words], self.vocab)
        documents = np.fromiter((s.documents for s in eval_sets for _ in s.items), dtype=bool,
                                count=len(self.items))
        long = (evals.lengths >= cfg.ngram) & ~documents
        tiny = (evals.lengths >= cfg.min_words) & (evals.lengths < cfg.long_words) & ~documents
        short = (evals.lengths >= cfg.long_words) | (documents & (evals.lengths >= cfg.ngram))
        # long texts: n-grams across a record's messages (a question in one turn, its answer in the next); shorter
        # ones: within one message, or a long conversation would cover a short text's few n-grams by chance
        self.rules = [(rule, NgramTable.build(evals, n, chosen, cfg.boilerplate_items), across, coverage)
                      for rule, n, chosen, across, coverage in [
                          ("13-gram", cfg.ngram, long, True, 0.0),
                          ("near copy", cfg.short_ngram, short, True, cfg.min_coverage),
                          ("near copy", cfg.tiny_ngram, tiny, False, cfg.min_coverage)] if chosen.any()]

    def check(self, train_records: Sequence[dict[str, Any]]) -> "Contamination":
        """Every training record that holds an eval item, by exact match, a shared 13-gram or near-copy coverage."""
        messages = [[normalise(t) for t in record_texts(r)] for r in train_records]
        message_owner = np.fromiter((row for row, texts in enumerate(messages) for _ in texts), dtype=np.int64)
        found: dict[tuple[int, int], str] = {}  # (train record, global eval item) -> rule
        for row, texts in enumerate(messages):
            whole = [list(chain.from_iterable(texts))] if len(texts) > 1 else []
            for words in texts + whole:
                for g in self.exact.get(text_key(words), ()):
                    found.setdefault((row, g), "exact")
        train = Corpus(list(chain.from_iterable(messages)), self.vocab)
        for rule, table, across, coverage in self.rules:
            t_hash, t_owner = train.ngrams(table.n, groups=message_owner if across else None, distinct=False)
            rows, cols = table.matches(t_hash, t_owner)
            if not len(rows):
                continue
            key, shared = np.unique(rows.astype(np.int64) * len(self.items) + cols, return_counts=True)
            rows, cols = key // len(self.items), key % len(self.items)
            hit = shared >= np.maximum(1 if coverage == 0 else 2, coverage * table.totals[cols])
            for row, col in zip(rows[hit].tolist(), cols[hit].tolist()):
                found.setdefault((row if across else int(message_owner[row]), col), rule)
        return tally(found, self.items, self.sizes, len(train_records))


def find_contamination(train_records: Sequence[dict[str, Any]], eval_sets: Sequence[EvalSet] | EvalIndex,
                       cfg: DecontamConfig = DecontamConfig()) -> "Contamination":
    """Every training record that holds an item of `eval_sets` (or of a prebuilt EvalIndex)."""
    index = eval_sets if isinstance(eval_sets, EvalIndex) else EvalIndex(eval_sets, cfg)
    return index.check(train_records)


def exact_keys(eval_sets: Sequence[EvalSet], items: list[tuple[str, str, list[str]]], cfg: DecontamConfig
               ) -> dict[str, list[int]]:
    """Hashes of every normalised eval text and question (the fast path), to the items they belong to."""
    keys: dict[str, list[int]] = {}
    index = {(name, item_id): g for g, (name, item_id, _) in enumerate(items)}
    for g, (_, _, words) in enumerate(items):
        if len(words) >= cfg.min_exact_words:
            keys.setdefault(text_key(words), []).append(g)
    for s in eval_sets:
        for item_id, question in s.questions.items():
            words = normalise(question)
            if len(words) >= cfg.min_exact_words:
                keys.setdefault(text_key(words), []).append(index[(s.name, item_id)])
    return keys


def tally(found: dict[tuple[int, int], str], items: Sequence[tuple[str, str]], sizes: dict[str, int],
          n_train: int) -> Contamination:
    """The per-set counts of (train record, eval item) hits; `items` are (set name, item id) by global index."""
    report = Contamination(train_records=n_train)
    per_set = {name: {"contaminated_items": set(), "train_records": set(), "by_rule": {}} for name in sizes}
    for (row, g), rule in sorted(found.items()):
        name, item_id = items[g]
        entry = per_set[name]
        entry["contaminated_items"].add(item_id)
        entry["train_records"].add(row)
        entry["by_rule"][rule] = entry["by_rule"].get(rule, 0) + 1
        report.flagged.setdefault(row, []).append(f"{name}:{item_id} ({rule})")
    for name, entry in per_set.items():
        examples = sorted(entry["contaminated_items"])[:5]
        report.per_set[name] = {"items": sizes[name], "contaminated_items": len(entry["contaminated_items"]),
                                "train_records": len(entry["train_records"]), "by_rule": entry["by_rule"],
                                "examples": examples}
    return report


def drop_contaminated(records: Sequence[Any], report: Contamination) -> tuple[list[Any], int]:
    """The records the report did not flag, and how many were dropped."""
    flagged = set(report.flagged)
    kept = [r for i, r in enumerate(records) if i not in flagged]
    return kept, len(records) - len(kept)


def merge(a: Contamination, b: Contamination) -> Contamination:
    """Two checks of the same training records against different eval sets, as one report."""
    flagged = {row: a.flagged.get(row, []) + b.flagged.get(row, []) for row in set(a.flagged) | set(b.flagged)}
    return Contamination(flagged, {**a.per_set, **b.per_set}, max(a.train_records, b.train_records))
