"""Build the moderation classifier's artifact: `python -m llmcycle.safety.train_classifier --out DIR`.

Deterministic: the corpus split is fixed by crc32 of each example's group, the optimiser is full-batch L-BFGS from
zeros on one BLAS thread, so the same packages give the same weights whatever the thread settings. The threshold on
P(harmful) is chosen on a development part of the training split (never the held-out part): the lowest threshold
that blocks (in a category the default policy blocks) at most `--max-false-block` of its benign prompts, averaged
over its languages. The held-out part is scored once, at the end, into the card file beside the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import optimize, sparse
from threadpoolctl import threadpool_limits

from llmcycle.safety.classifier import (FORMAT, GLOSS, Classifier, Meaning, ToxicityScorer, feature_strings, hashed,
                                         read_gloss, weights_digest)
from llmcycle.safety.corpus import Example, build
from llmcycle.safety.embedding import WordTable, load_table
from llmcycle.safety.framing import request_core
from llmcycle.safety.metrics import BLOCKING, evaluate

CLASSES = ["safe"] + [f"S{i}" for i in range(1, 15)]
MIN_LANG_SHARE = 1.0
# the mean-embedding block (safety.embedding) lost to the n-grams alone on the development split at every scale
# tried (0.1, 0.3, 1), and so did or merely tied a table distilled from multilingual-e5-small and that encoder's and
# USE-multilingual's own sentence embeddings (docs/safety-model-card.md), so the shipped weights have none
EMBEDDING_SCALE = 0.0


def shipped_gloss() -> dict[str, str]:
    return read_gloss(resources.files("llmcycle").joinpath(GLOSS).read_text(encoding="utf-8"))


def design(examples: Sequence[Example], buckets: int, gloss: dict[str, str], table: WordTable | None = None,
           scale: float = 0.0) -> sparse.csr_matrix:
    """One row per example: its hashed n-grams (L2-normalised), then, with a table, its normalised mean embedding
    times `scale` (the block's size against the n-grams' sets how hard the shared L2 penalty holds its weights)."""
    scorer = ToxicityScorer()
    rows, cols, vals = [], [], []
    for row, example in enumerate(examples):
        ids, weights = hashed(feature_strings(example.text, scorer, gloss), buckets)
        rows.append(np.full(len(ids), row)), cols.append(ids), vals.append(weights)
    x = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(len(examples), buckets), dtype=np.float64)
    if table is None or scale <= 0:
        return x
    return sparse.hstack([x, sparse.csr_matrix(scale * mean_directions(examples, table))], format="csr")


def mean_directions(examples: Sequence[Example], table: WordTable) -> np.ndarray:
    """Each example's L2-normalised mean token embedding (zeros for one without words)."""
    sums = np.stack([table.sum(e.text) for e in examples]).astype(np.float64)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)


def sample_weights(labels: np.ndarray, langs: np.ndarray) -> np.ndarray:
    """Harmful and safe weigh the same in total within each language, and every language weighs at least
    `MIN_LANG_SHARE` of English (a few hundred hand-written lines must not drown in thousands of English ones: the
    goals hold per language, so each language counts as much as English)."""
    weights = np.zeros(len(labels))
    counts = {lang: int((langs == lang).sum()) for lang in set(langs.tolist())}
    biggest = max(counts.values())
    for lang, count in counts.items():
        share = max(count, MIN_LANG_SHARE * biggest)
        for harmful in (True, False):
            mask = (langs == lang) & ((labels != 0) == harmful)
            if mask.any():
                weights[mask] = 0.5 * share / mask.sum()
    return weights / weights.sum()


def fit(x: sparse.csr_matrix, labels: np.ndarray, sample_w: np.ndarray, l2: float,
        iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted softmax regression, L2 on the weights."""
    n, d = x.shape
    k = len(CLASSES)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = flat[:d * k].reshape(d, k), flat[d * k:]
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        value = -(sample_w * (onehot * logp).sum(axis=1)).sum() + 0.5 * l2 * (w * w).sum()
        delta = (np.exp(logp) - onehot) * sample_w[:, None]
        grad = np.concatenate([(x.T @ delta + l2 * w).ravel(), delta.sum(axis=0)])
        return value, grad

    # one BLAS thread: the optimiser's vector reductions sum in an order that depends on the thread count, and 150
    # L-BFGS steps grow that rounding into different weights (1 and 2 threads gave different artifacts)
    with threadpool_limits(limits=1, user_api="blas"):
        result = optimize.minimize(loss, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                                   options={"maxiter": iters})
    return result.x[:d * k].reshape(d, k), result.x[d * k:]


def blocking_harm(probs: np.ndarray) -> np.ndarray:
    """P(harmful) where the most likely hazard category blocks under the default policy, 0 where it only flags:
    the threshold is set on what the server would block, not on every prompt it would flag."""
    ranked = probs.copy()
    ranked[:, 0] = -1.0
    blocks = np.array([CLASSES[i] in BLOCKING for i in ranked.argmax(axis=1)])
    return np.where(blocks, 1.0 - probs[:, 0], 0.0)


def language_threshold(harm: np.ndarray, dev: Sequence[Example], max_false_block: float) -> float:
    """The lowest threshold whose false-block rate on the benign development prompts, averaged over languages (each
    language weighs the same, however many prompts it has), stays within the bound. A bound on the pooled prompts let
    French and German benign prompts be blocked 10-20% of the time while English, nine tenths of them, stayed within
    it; a bound in every language alone is set by the single most alarming of its twenty-odd benign prompts (one
    false block is already 4%), which cost every language half its recall on the development split."""
    safe = np.array([e.label == "safe" for e in dev])
    langs = np.array([e.lang for e in dev])
    benign = {lang: harm[safe & (langs == lang)] for lang in sorted(set(langs[safe].tolist()))}
    for threshold in np.unique(np.concatenate([h + 1e-6 for h in benign.values()] + [[0.2, 0.95]])):
        if 0.2 <= threshold <= 0.95 and np.mean([(h >= threshold).mean() for h in benign.values()]) <= max_false_block:
            return float(threshold)
    return 0.95


def model(weights: np.ndarray, bias: np.ndarray, threshold: float, gloss: dict[str, str], buckets: int,
          table: WordTable | None, scale: float) -> Classifier:
    """The classifier as it will be loaded (float16 weights); rows past `buckets` are the embedding block's."""
    weights = weights.astype(np.float16).astype(np.float32)
    meaning = Meaning(table, weights[buckets:], scale) if table is not None and scale > 0 else None
    return Classifier(weights[:buckets], bias.astype(np.float32), CLASSES, threshold, "(in training)", gloss, meaning)


@dataclass(frozen=True)
class Settings:
    buckets: int = 1 << 17
    l2: float = 1e-6
    iters: int = 150
    max_false_block: float = 0.025
    seed: int = 0
    scale: float = EMBEDDING_SCALE


@dataclass
class Prepared:
    """The training split's design matrix and labels, and which rows are the development fifth."""

    examples: list[Example]
    x: sparse.csr_matrix
    labels: np.ndarray
    langs: np.ndarray
    dev_mask: np.ndarray
    gloss: dict[str, str]
    table: WordTable | None


def prepare(train_set: list[Example], settings: Settings) -> Prepared:
    """Every example as `Classifier.prompt_verdict` reads a prompt: its request core (`framing.request_core`)."""
    train_set = [replace(e, text=request_core(e.text)) for e in train_set]
    gloss = shipped_gloss()
    table = load_table() if settings.scale > 0 else None
    return Prepared(train_set, design(train_set, settings.buckets, gloss, table, settings.scale),
                    np.array([CLASSES.index(e.label) for e in train_set]), np.array([e.lang for e in train_set]),
                    np.array([zlib.crc32(e.group.encode()) % 5 == 0 for e in train_set]), gloss, table)


def develop(data: Prepared, settings: Settings) -> tuple[float, list[Example], np.ndarray]:
    """Fit on four fifths, choose the threshold on the development fifth: (threshold, its prompts, their blocking
    P(harmful)). The held-out split is not read."""
    keep = ~data.dev_mask
    w, b = fit(data.x[keep], data.labels[keep], sample_weights(data.labels[keep], data.langs[keep]), settings.l2,
               settings.iters)
    dev = [e for e, m in zip(data.examples, data.dev_mask) if m]
    clf = model(w, b, 0.5, data.gloss, settings.buckets, data.table, settings.scale)
    harm = blocking_harm(clf.probabilities([e.text for e in dev]))
    return language_threshold(harm, dev, settings.max_false_block), dev, harm


def dev_report(settings: Settings) -> str:
    """Per language, the development prompts blocked at the chosen threshold: how candidates are compared."""
    threshold, dev, harm = develop(prepare(build(settings.seed)["train"], settings), settings)
    lines = [f"development fifth, threshold {threshold:.3f}"]
    for lang in sorted({e.lang for e in dev}):
        harmful = harm[[e.lang == lang and e.label in BLOCKING for e in dev]]
        benign = harm[[e.lang == lang and e.label == "safe" for e in dev]]
        lines.append(f"{lang}: harmful blocked {(harmful >= threshold).mean():.3f} (n={len(harmful)}), benign blocked "
                     f"{(benign >= threshold).mean():.3f} (n={len(benign)})")
    return "\n".join(lines)


def train(settings: Settings) -> tuple[Classifier, dict]:
    corpus = build(settings.seed)
    data = prepare(corpus["train"], settings)
    threshold, _, _ = develop(data, settings)
    w, b = fit(data.x, data.labels, sample_weights(data.labels, data.langs), settings.l2, settings.iters)
    clf = model(w, b, threshold, data.gloss, settings.buckets, data.table, settings.scale)
    card = {"heldout": evaluate(clf, corpus["heldout"]), "train_size": len(data.examples),
            "dropped_near_duplicates": corpus["dropped_near_duplicates"],
            "settings": {"buckets": settings.buckets, "l2": settings.l2, "iters": settings.iters,
                         "seed": settings.seed, "threshold": threshold,
                         "max_false_block_dev": settings.max_false_block, "embedding_scale": settings.scale}}
    return clf, card


def save(clf: Classifier, card: dict, out: Path) -> None:
    """Weights as float16 (the checksum covers exactly what is loaded), then the card; each written to a temporary
    name and renamed, so a crash leaves no half-written artifact."""
    out.mkdir(parents=True, exist_ok=True)
    weights = clf.weights.astype(np.float16)
    parts = {"weights": weights, "bias": clf.bias}
    meta = {"format": FORMAT, "classes": clf.classes, "threshold": clf.threshold, "gloss": clf.gloss}
    if clf.meaning is not None:
        parts["dense"] = clf.meaning.weights.astype(np.float16)
        meta["embedding"] = {**clf.meaning.table.identity, "scale": clf.meaning.scale}
    meta["weights_sha256"] = weights_digest(weights, parts.get("dense"))
    tmp = out / "moderation.tmp.npz"
    np.savez_compressed(tmp, **parts, meta=np.array(json.dumps(meta)))
    tmp.replace(out / "moderation.npz")
    write_card(card, out / "moderation_card.json")


def write_card(card: dict, path: Path) -> None:
    """A card as JSON, written to a temporary name and renamed."""
    tmp = path.with_name(path.stem + ".tmp.json")
    tmp.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def heldout_line(card: dict) -> str:
    overall = card["heldout"]["overall"]
    return f"held-out n={overall['n']}: recall {overall['recall']:.3f}, false-block {overall['false_block_rate']:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="dir for moderation.npz and moderation_card.json")
    parser.add_argument("--buckets", type=int, default=Settings.buckets)
    parser.add_argument("--l2", type=float, default=Settings.l2)
    parser.add_argument("--iters", type=int, default=Settings.iters)
    parser.add_argument("--max-false-block", type=float, default=Settings.max_false_block,
                        help="benign share of the development prompts the threshold may block (the goal allows 0.03)")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--embedding-scale", type=float, default=Settings.scale,
                        help="size of the mean-embedding block beside the n-grams (0: n-grams only)")
    parser.add_argument("--dev-report", action="store_true",
                        help="only fit on four fifths and print the development fifth's figures per language (the "
                             "held-out split is not read, nothing is written)")
    args = parser.parse_args(argv)
    settings = Settings(args.buckets, args.l2, args.iters, args.max_false_block, args.seed, args.embedding_scale)
    if args.dev_report:
        print(dev_report(settings))
        return 0
    if args.out is None:
        parser.error("--out is required (unless --dev-report)")
    clf, card = train(settings)
    save(clf, card, args.out)
    print(f"{heldout_line(card)}, threshold {clf.threshold:.3f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
