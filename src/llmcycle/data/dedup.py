"""Conversation-level dedup: exact (after case/whitespace folding) and near-duplicate (MinHash + LSH).

Near-duplicates are found per variant, so the two speaker views of one Cornell conversation never count as copies
of each other. In "remove" mode a record goes when it is a near-duplicate of an earlier kept one; in "group" mode
all are kept and the split groups of near-duplicates are merged, so a cluster never straddles two splits.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict

from llmcycle.data.config import DataConfig
from llmcycle.data.example import Example, StepReport
from llmcycle.progress import bar

WORD = re.compile(r"\w+")
MINHASH_SEED = 1  # fixed: which records count as duplicates must not depend on the split seed


def exact_key(example: Example) -> str:
    if example.is_chat:
        parts = [f"{m['role']}\x1f{' '.join(m['content'].lower().split())}" for m in example.record["messages"]]
    elif "text" not in example.record:  # a preference record: its sides stay apart, its label counts
        parts = [f"{m['role']}\x1f{' '.join(m['content'].lower().split())}"
                 for messages in example.message_lists() for m in messages + [{"role": "|", "content": ""}]]
        parts.append(str(example.record.get("label", "")))
    else:
        parts = [" ".join(example.record["text"].lower().split())]
    return hashlib.sha1("\x1e".join([example.variant, *parts]).encode("utf-8")).hexdigest()


def exact_dedup(examples: list[Example], cfg: DataConfig) -> tuple[list[Example], StepReport]:
    seen: set[str] = set()
    kept = []
    for example in examples:
        key = exact_key(example)
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept, StepReport("exact_dedup", True, removed=len(examples) - len(kept))


class ShingleHasher:
    """Sorted unique 32-bit hashes of a text's word n-grams (the whole text when it has fewer words).

    Each distinct word is hashed once (crc32, deterministic across runs, cached: chat vocabularies are small) and
    n-grams are combined from word hashes with numpy, about 3x faster than hashing every n-gram string.
    """

    MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)

    def __init__(self, size: int) -> None:
        self.size = size
        self.words: dict[str, int] = {}

    def word_ids(self, words: list[str]):
        import numpy as np

        cache = self.words
        for word in set(words).difference(cache):
            cache[word] = zlib.crc32(word.encode("utf-8"))
        return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))

    def __call__(self, text: str):
        import numpy as np

        words = WORD.findall(text.lower()) or [text.strip().lower()]
        ids = self.word_ids(words)
        n = min(self.size, len(ids))
        grams = np.zeros(len(ids) - n + 1, dtype=np.uint64)
        for k in range(n):  # uint64 arithmetic wraps, which is what a hash wants
            multiplier = np.uint64(self.MULTIPLIERS[k % len(self.MULTIPLIERS)] + 2 * (k // len(self.MULTIPLIERS)))
            grams = grams * np.uint64(31) + ids[k : len(ids) - n + 1 + k] * multiplier
        return np.unique((grams >> np.uint64(32)).astype(np.uint32))


def jaccard(a, b) -> float:
    import numpy as np

    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (a.size + b.size - common)


def lsh_bands(cfg: DataConfig) -> tuple[int, int]:
    """(bands, rows per band) from datasketch's optimiser, tuned for recall: a threshold 0.1 below the real one and
    false negatives weighted 4x. Candidates are confirmed by exact Jaccard, so a false positive costs only time."""
    from datasketch import MinHashLSH

    index = MinHashLSH(threshold=max(0.05, cfg.near_dup_threshold - 0.1), num_perm=cfg.minhash_perms,
                       weights=(0.2, 0.8))
    return index.b, index.r


def signature_matrix(hashes: list, cfg: DataConfig):
    """(records x num_perm) MinHash signatures from datasketch's bulk API."""
    import numpy as np
    from datasketch import MinHash

    # the shingles are already 32-bit hashes: `int` hands them to datasketch unchanged
    sketches = MinHash.bulk((h.tolist() for h in hashes), num_perm=cfg.minhash_perms, seed=MINHASH_SEED,
                            hashfunc=int)
    if not sketches:
        return np.zeros((0, cfg.minhash_perms), dtype=np.uint32)
    return np.vstack([m.hashvalues for m in sketches])


def band_candidates(signatures, rows: list[int], bands: int, width: int) -> dict[int, set[int]]:
    """{i: {earlier j sharing a band bucket with i}} among `rows`: the LSH banding done with numpy sorts.

    Same buckets as datasketch's MinHashLSH (records collide when one band of their signatures is equal), but
    25-50x faster than its per-record insert/query (bench/data_bench.py --compare-lsh)."""
    import numpy as np

    ids = np.asarray(rows)
    sub = signatures[ids].astype(np.uint64)
    mixers = np.random.default_rng(MINHASH_SEED).integers(1, 2**63, size=width, dtype=np.uint64) | np.uint64(1)
    found: dict[int, set[int]] = defaultdict(set)
    for band in range(bands):
        keys = (sub[:, band * width : (band + 1) * width] * mixers).sum(axis=1)  # uint64: wraps, as a hash should
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], len(ordered)]
        for start, end in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            members = sorted(ids[order[start:end]].tolist())
            for k in range(1, len(members)):
                found[members[k]].update(members[:k])
    return found


def near_pairs(examples: list[Example], cfg: DataConfig) -> dict[int, list[int]]:
    """{i: [earlier j whose shingle Jaccard with i reaches the threshold]}, per variant."""
    hasher = ShingleHasher(cfg.shingle_words)
    hashes = [hasher(e.joined_text()) for e in bar(examples, desc="shingles", unit="rec")]
    signatures = signature_matrix(hashes, cfg)
    bands, width = lsh_bands(cfg)
    by_variant: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        by_variant[example.variant].append(i)
    pairs: dict[int, list[int]] = {}
    for variant in sorted(by_variant):
        for i, candidates in band_candidates(signatures, by_variant[variant], bands, width).items():
            similar = sorted(j for j in candidates if jaccard(hashes[i], hashes[j]) >= cfg.near_dup_threshold)
            if similar:
                pairs[i] = similar
    return pairs


def near_dedup(examples: list[Example], cfg: DataConfig) -> tuple[list[Example], StepReport]:
    pairs = near_pairs(examples, cfg)
    report = StepReport("near_dedup", True, details={"mode": cfg.near_dedup, "pairs": sum(map(len, pairs.values()))})
    if cfg.near_dedup == "remove":
        dropped: set[int] = set()
        for i in sorted(pairs):
            if any(j not in dropped for j in pairs[i]):
                dropped.add(i)
        report.removed = len(dropped)
        return [e for i, e in enumerate(examples) if i not in dropped], report
    report.details["groups_merged"] = merge_groups(examples, pairs)
    return examples, report


def merge_groups(examples: list[Example], pairs: dict[int, list[int]]) -> int:
    """Union the split groups of near-duplicate records; returns how many unions changed something."""
    parent: dict[str, str] = {}

    def find(group: str) -> str:
        parent.setdefault(group, group)
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    merged = 0
    for i, similar in sorted(pairs.items()):
        for j in similar:
            a, b = find(examples[i].group), find(examples[j].group)
            if a != b:
                parent[max(a, b)] = min(a, b)
                merged += 1
    for example in examples:
        example.group = find(example.group)
    return merged
