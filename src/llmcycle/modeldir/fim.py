"""Fill-in-the-middle: the masked objective for decoder models, as a data transform.

A document is cut at two random points into prefix, middle and suffix and rearranged so that ordinary next-token
training teaches the model to write the middle after seeing both sides:

    PSM: <fim_prefix>prefix<fim_suffix>suffix<fim_middle>middle
    SPM: <fim_prefix><fim_suffix>suffix<fim_middle>prefix middle     (the variant StarCoder trains on)

The token names follow the StarCoder convention. SmolLM2's tokenizer does not hold them (its ids 0-16 are the
end-of-text, chat, repository and notebook markers) and its embedding has no spare rows: such a model has to grow
its embedding before `ensure_fim_tokens` can add them; llmcycle's own tokenizers can be trained with them. A `rate`
share of records is transformed (the rest stay left-to-right), each record's choice and cut points drawn from a
generator seeded by (seed, record index), so a run is reproducible and independent of batching. Inference is the
inverse: `infill_prompt(prefix, suffix)` is exactly what training put before the middle, and `extract_middle` cuts a
generation at the first end marker.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

from pydantic import Field

from llmcycle.config import StageConfig
from llmcycle.errors import ConfigError, DataError

FIM_PREFIX = "<fim_prefix>"
FIM_SUFFIX = "<fim_suffix>"
FIM_MIDDLE = "<fim_middle>"
FIM_PAD = "<fim_pad>"
FIM_TOKENS = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)
# where an infill generation ends: the tokenizer's EOS plus these markers, whichever comes first
END_MARKERS = (FIM_PAD, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, "<|endoftext|>", "<file_sep>")


class FimConfig(StageConfig):
    """The FIM mix a pretraining or fine-tuning run applies to its records."""

    rate: float = Field(0.5, ge=0.0, le=1.0, description="Share of records turned into FIM examples.")
    spm_rate: float = Field(0.5, ge=0.0, le=1.0, description="Share of FIM examples in SPM (else PSM) order.")
    level: Literal["char", "token"] = Field("char", description="Cut points between characters or between tokens.")
    seed: int = 0


def cut_points(length: int, rng: random.Random) -> tuple[int, int]:
    """Two uniform cut points 0 <= a <= b <= length (the middle may be empty, as in the FIM paper)."""
    a, b = rng.randint(0, length), rng.randint(0, length)
    return min(a, b), max(a, b)


def arrange(prefix: Sequence, middle: Sequence, suffix: Sequence, spm: bool, marks: Sequence) -> list:
    """The FIM layout of three pieces; `marks` are the (prefix, suffix, middle) markers as pieces of the same kind."""
    p, s, m = marks
    if spm:
        return [p, s, *suffix, m, *prefix, *middle]
    return [p, *prefix, s, *suffix, m, *middle]


def fim_text(text: str, rng: random.Random, spm: bool) -> str:
    """A character-level FIM example of `text`."""
    a, b = cut_points(len(text), rng)
    return "".join(arrange(text[:a], text[a:b], text[b:], spm, FIM_TOKENS))


def fim_ids(ids: Sequence[int], rng: random.Random, spm: bool, marks: Sequence[int]) -> list[int]:
    """A token-level FIM example of token ids; `marks` are the ids of <fim_prefix>, <fim_suffix>, <fim_middle>."""
    a, b = cut_points(len(ids), rng)
    return [int(t) for t in arrange(ids[:a], ids[a:b], ids[b:], spm, marks)]


def restore(example: Sequence, marks: Sequence) -> list:
    """The original sequence (text characters or ids) of a PSM or SPM example: the inverse of `arrange`."""
    items = list(example)
    p, s, m = marks
    if len(items) < 3 or items[0] != p or s not in items or m not in items:
        raise DataError("not a FIM example: it must start with the prefix marker and hold the suffix and middle ones")
    si, mi = items.index(s), items.index(m)
    if si == 1:  # SPM: suffix, then prefix and middle together
        return items[mi + 1:] + items[2:mi]
    return items[1:si] + items[mi + 1:] + items[si + 1:mi]


def record_rng(seed: int, index: int) -> random.Random:
    """One generator per record: the same record gets the same cut whatever the order or sharding."""
    return random.Random(f"fim:{seed}:{index}")


def transform_text(text: str, cfg: FimConfig, rng: random.Random, tokenizer: Any = None) -> str | None:
    """A FIM version of `text` with probability `rate`, else None (keep it left-to-right)."""
    if rng.random() >= cfg.rate or any(mark in text for mark in FIM_TOKENS):
        return None  # a text that already holds a marker would not split back unambiguously
    spm = rng.random() < cfg.spm_rate
    if cfg.level == "char":
        return fim_text(text, rng, spm)
    if tokenizer is None:
        raise ConfigError("fim.level token: needs the tokenizer (use level char without one)")
    marks = list(fim_token_ids(tokenizer).values())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(fim_ids(ids, rng, spm, marks))


def transform_record(record: dict[str, Any], index: int, cfg: FimConfig, tokenizer: Any = None) -> dict[str, Any]:
    """A `{"text"}` record's text, or each assistant turn of a chat record, FIM-transformed at the mix rate.

    In a chat only assistant turns change (they are what fine-tuning learns); the user's turns stay readable."""
    rng = record_rng(cfg.seed, index)
    if isinstance(record.get("text"), str):
        new = transform_text(record["text"], cfg, rng, tokenizer)
        return record if new is None else {**record, "text": new}
    if isinstance(record.get("messages"), list):
        out = copy.deepcopy(record)
        for message in out["messages"]:
            if message.get("role") == "assistant" and isinstance(message.get("content"), str):
                new = transform_text(message["content"], cfg, rng, tokenizer)
                message["content"] = message["content"] if new is None else new
        return out
    raise DataError(f"record {index}: FIM needs a 'text' string or a 'messages' list")


def fim_on(cfg: FimConfig | None) -> bool:
    return cfg is not None and cfg.rate > 0


def fim_transform(cfg: FimConfig | None, tokenizer: Any = None) -> Callable[[dict[str, Any], int], dict[str, Any]] | None:
    """A training split's record rewriter `(record, index) -> record`, or None when FIM is off. Only training
    splits are rewritten: held-out ones stay left-to-right, so their perplexity compares with a next-token run."""
    if not fim_on(cfg):
        return None
    return lambda record, index: transform_record(record, index, cfg, tokenizer)


def apply_fim(records: Iterable[dict[str, Any]], cfg: FimConfig, tokenizer: Any = None) -> Iterator[dict[str, Any]]:
    for index, record in enumerate(records):
        yield transform_record(record, index, cfg, tokenizer)


# ---- tokenizer -----------------------------------------------------------------------------------------------
def fim_token_ids(tokenizer: Any) -> dict[str, int]:
    """{token: id} of the three FIM markers; ConfigError naming the missing ones if any is not a single token."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in FIM_TOKENS if t not in vocab
               or tokenizer(t, add_special_tokens=False)["input_ids"] != [vocab[t]]]
    if missing:
        raise ConfigError(f"tokenizer has no single-token {', '.join(missing)}: FIM needs them (train the "
                          f"tokenizer with them as special tokens, or add them where the model has room)")
    return {t: vocab[t] for t in FIM_TOKENS}


def ensure_fim_tokens(tokenizer: Any, embedding_rows: int, where: str = "model") -> dict[str, int]:
    """The FIM markers' ids, adding any missing ones as special tokens when the model's embedding has unused rows
    for them (a model whose embedding would have to grow is refused in one line: resizing is the caller's call)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in FIM_TOKENS if t not in vocab]
    if missing:
        needed = len(tokenizer) + len(missing)
        if needed > embedding_rows:
            raise ConfigError(f"{where}: tokenizer lacks {', '.join(missing)} and the embedding has no room for "
                              f"them ({len(tokenizer)} tokens in use, {embedding_rows} rows)")
        from tokenizers import AddedToken  # heavy: only a FIM run on a tokenizer without the markers needs it

        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return fim_token_ids(tokenizer)


# ---- inference -----------------------------------------------------------------------------------------------
def infill_prompt(prefix: str, suffix: str, spm: bool = False) -> str:
    """The text a model continues to write the middle: exactly what a training example holds before its middle."""
    return "".join(arrange(prefix, "", suffix, spm, FIM_TOKENS))


def extract_middle(generation: str, stops: Sequence[str] = ()) -> str:
    """The middle a model wrote: its continuation of `infill_prompt` cut at the first end marker or stop string."""
    cut = len(generation)
    for marker in (*END_MARKERS, *stops):
        found = generation.find(marker) if marker else -1
        if found != -1:
            cut = min(cut, found)
    return generation[:cut]
