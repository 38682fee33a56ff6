"""Train the meaning probe's head (probe.py) on the moderation corpus, from a backbone's hidden states.

    python -m llmcycle.safety.train_probe --model SMOLLM2_HF_DIR --out DIR [--cache features.npz]

The same discipline as the word classifier (train_classifier.py): the regression is fitted on four fifths of the
training prompts, the weight of its log-odds and the threshold are chosen on the development fifth (the threshold
by the same language-averaged false-block bound), then the regression is refitted on every training prompt. The
held-out split is read once, at the end, for the card. `SMOLLM2_HF_DIR` is what `llmcycle import
smollm2-135m-instruct --out DIR` writes (or the cache dir the server imports it to). Embedding the corpus takes
about eight minutes on two cores (each prompt, and the gloss of each French, Spanish or German one); `--cache`
keeps the features for a second run.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import optimize

from llmcycle.safety.corpus import build
from llmcycle.safety.metrics import BLOCKING, evaluate
from llmcycle.safety.classifier import default_classifier
from llmcycle.safety.probe import PROBE_MODEL, HiddenStates, Probe, ProbeHead, glossed, save_head
from llmcycle.safety.train_classifier import Settings, develop, heldout_line, language_threshold, prepare, \
    write_card

LAYER = 16  # of SmolLM2-135M's 30: the middle layers separated harmful from benign best (model card)
FEATURES = "mean and last token, of the prompt and of its gloss"  # `Probe.features`: part of the cache's key
L2 = 1.5e-3  # on the mean log-loss over standardised features
WEIGHTS = (0.25, 0.5, 0.75, 1.0)  # candidate weights of the probe's log-odds in the sum


def fit_regression(x: np.ndarray, y: np.ndarray, l2: float = L2) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, coef, intercept) of an L2-regularised logistic regression on standardised `x`."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    n, d = z.shape

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = flat[:d], flat[d]
        logits = z @ w + b
        p = 1 / (1 + np.exp(-logits))
        value = np.mean(np.logaddexp(0, logits) - y * logits) + 0.5 * l2 * w @ w
        g = (p - y) / n
        return float(value), np.concatenate([z.T @ g + l2 * w, [g.sum()]])

    result = optimize.minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return mean, scale, result.x[:d], float(result.x[d])


def features(model: str, texts: list[str], cache: Path | None) -> np.ndarray:
    """Every text's features at LAYER as `Probe.features` makes them (the text's `HiddenStates.features`, then its
    gloss's), from `cache` when it holds exactly these texts."""
    gloss = default_classifier().gloss
    english = [glossed(t, gloss) for t in texts]
    digest = hashlib.sha256("\0".join([FEATURES, *texts, *english]).encode()).hexdigest()
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["digest"]) == digest and int(data["layer"]) == LAYER:
                return data["features"]
    states = HiddenStates(model, LAYER)
    changed = [i for i, (t, e) in enumerate(zip(texts, english)) if t != e]
    every = texts + [english[i] for i in changed]  # a gloss that changes nothing is not read twice
    order = sorted(range(len(every)), key=lambda i: len(every[i]))  # similar lengths together: little padding
    read = np.zeros((len(every), 2 * states.body.config.hidden_size), np.float32)
    for start in range(0, len(order), 16):
        rows = order[start:start + 16]
        read[rows] = states.features([every[i] for i in rows])
        print(f"\rembedded {min(start + 16, len(every))}/{len(every)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    out = np.concatenate([read[:len(texts)], read[:len(texts)]], axis=1)
    out[changed, read.shape[1]:] = read[len(texts):]
    if cache is not None:
        np.savez(cache, features=out, digest=np.array(digest), layer=np.array(LAYER))
    return out


def choose(harm: np.ndarray, probe_logits: np.ndarray, dev: list, head: ProbeHead, bound: float) -> dict:
    """Per candidate weight, the development fifth's threshold (language-averaged bound) and recall; the best."""
    harmful = np.array([e.label in BLOCKING for e in dev])
    tried = []
    for weight in WEIGHTS:
        trial = ProbeHead(head.mean, head.scale, head.coef, head.intercept, weight, 0.5, LAYER, PROBE_MODEL, True)
        combined = np.array([trial.combine(float(h), float(z)) for h, z in zip(harm, probe_logits)])
        threshold = language_threshold(combined, dev, bound)
        tried.append({"weight": weight, "threshold": threshold,
                      "dev_recall": float((combined[harmful] >= threshold).mean())})
    return {"tried": tried, "best": max(tried, key=lambda t: t["dev_recall"])}


def train(model: str, cache: Path | None, settings: Settings = Settings()) -> tuple[ProbeHead, dict]:
    corpus = build(settings.seed)
    train_set, heldout = corpus["train"], corpus["heldout"]
    every = features(model, [e.text for e in train_set] + [e.text for e in heldout], cache)
    x, x_heldout = every[:len(train_set)], every[len(train_set):]
    y = np.array([e.label != "safe" for e in train_set], dtype=np.float64)
    data = prepare(train_set, settings)
    _, dev, harm = develop(data, settings)
    keep = ~data.dev_mask
    mean, scale, coef, intercept = fit_regression(x[keep], y[keep])
    fifths = ProbeHead(mean, scale, coef, intercept, 0.0, 0.5, LAYER, PROBE_MODEL, True)
    chosen = choose(harm, np.array([fifths.logit(row) for row in x[data.dev_mask]]), dev, fifths,
                    settings.max_false_block)
    mean, scale, coef, intercept = fit_regression(x, y)
    head = ProbeHead(mean, scale, coef, intercept, chosen["best"]["weight"], chosen["best"]["threshold"], LAYER,
                     PROBE_MODEL, True)
    half = x.shape[1] // 2  # each held-out prompt's states, and its gloss's, as the probe will ask for them
    gloss = default_classifier().gloss
    lookup = {glossed(e.text, gloss): row[half:] for e, row in zip(heldout, x_heldout)}
    lookup.update({e.text: row[:half] for e, row in zip(heldout, x_heldout)})
    probe = Probe(head, lambda texts: np.stack([lookup[t] for t in texts]), gloss)
    card = {"model": PROBE_MODEL, "layer": LAYER, "features": FEATURES, "l2": L2, "development": chosen,
            "train_size": len(train_set), "heldout": evaluate(probe, heldout)}
    return head, card


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF dir of SmolLM2-135M-Instruct")
    parser.add_argument("--out", type=Path, required=True, help="dir for probe.npz and probe_card.json")
    parser.add_argument("--cache", type=Path, help="features file to reuse (written when missing or stale)")
    args = parser.parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: not a model dir (no config.json); `llmcycle import "
                     f"{PROBE_MODEL} --out DIR` writes one")
    head, card = train(args.model, args.cache)
    save_head(head, args.out / "probe.npz")
    write_card(card, args.out / "probe_card.json")
    print(f"{heldout_line(card)}; weight {head.weight}, threshold {head.threshold:.3f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
