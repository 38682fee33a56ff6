"""The `reward` stage: a scalar head on any causal LM trained Bradley–Terry on preference pairs, in the shared loop.

Pairs come from paired preference records, or from chat records rated by people (`meta.ratings`, e.g. chitchat's
witty/upbeat/interesting scores): two conversations whose mean ratings differ by at least `min_rating_gap` make a
pair, the better one chosen. The output is an ordinary `AutoModelForSequenceClassification` dir (num_labels=1; the
score is read at the last real token), and the manifest reports pairwise accuracy on held-out pairs.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from pydantic import Field
from transformers import AutoModelForSequenceClassification
from transformers.utils import logging as hf_logging

from llmcycle.artifacts import open_artifact
from llmcycle.building import BUILD_LOCK
from llmcycle.config import StageConfig, to_dict
from llmcycle.records import read_preference_split
from llmcycle.errors import DataError, ModelLoadError, first_line
from llmcycle.infer.context import trim_tokens
from llmcycle.loading import check_exists, load_tokenizer_for
from llmcycle.progress import say
from llmcycle.records import load_split, split_path
from llmcycle.modeldir import end_of_turn_markers, render_chat
from llmcycle.train.batches.preference import Encoded, collate
from llmcycle.train.loop import LoopConfig, train_loop
from llmcycle.train.objectives import RewardBT
from llmcycle.train.policy import prepare_tokenizer, resolve_base


class RewardLoopConfig(LoopConfig):
    max_steps: int = Field(60, ge=1)
    batch_size: int = Field(8, ge=1, description="Pairs per micro-batch.")
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(3, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(30, ge=1)
    eval_batches: Optional[int] = Field(8, ge=1)
    log_every: int = Field(5, ge=1)
    save_every: int = Field(30, ge=1)


class RewardConfig(StageConfig):
    train: RewardLoopConfig = Field(default_factory=RewardLoopConfig)
    max_seq_len: int = Field(256, ge=16, description="Tokens scored per sequence (the start is cut first).")
    min_rating_gap: float = Field(1.0, ge=0, description="Rated chats: least mean-rating gap that makes a pair.")
    pairs_per_record: int = Field(2, ge=1, description="Rated chats: pairs drawn per record.")
    center_rewards: float = Field(0.01, ge=0, description="Pulls r_chosen + r_rejected towards 0.")
    train_layers: Optional[int] = Field(None, ge=1, description="Train only the top N layers and the head "
                                        "(None = every weight).")
    seed: int = 0
    train_split: str = "train"
    val_split: str = "val"
    max_train_pairs: Optional[int] = Field(None, ge=1)
    max_val_pairs: Optional[int] = Field(256, ge=1)
    record_offset: int = Field(0, ge=0, description="Rated chats: skip this many records first (disjoint judges).")
    record_stride: int = Field(1, ge=1, description="Rated chats: use every N-th record (with record_offset).")


TAIL_CHARS_PER_TOKEN = 8  # chitchat's chats average ~4.5 characters per token with the default tokenizer
TAIL_CHECKS = 8


def mean_rating(record: dict[str, Any]) -> Optional[float]:
    ratings = (record.get("meta") or {}).get("ratings")
    values = [v for v in ratings.values() if isinstance(v, (int, float))] if isinstance(ratings, dict) else []
    return sum(values) / len(values) if values else None


def rated_pairs(records: Sequence[dict[str, Any]], gap: float, per_record: int, seed: int) -> list[tuple[list, list]]:
    """(chosen conversation, rejected conversation) pairs of rated chat records at least `gap` apart."""
    rated = [(mean_rating(r), r["messages"]) for r in records if "messages" in r and mean_rating(r) is not None]
    rng = random.Random(seed)
    pairs = []
    for i, (score, messages) in enumerate(rated):
        for _ in range(per_record):
            j = rng.randrange(len(rated))
            other, other_messages = rated[j]
            if abs(score - other) >= max(gap, 1e-9):
                pairs.append((messages, other_messages) if score > other else (other_messages, messages))
    return pairs


def split_pairs(data_dir: str | Path, split: str, cfg: RewardConfig, limit: Optional[int]) -> list[tuple[list, list]]:
    """A split's pairs as whole conversations: paired preference records, or pairs of rated chats."""
    records = load_split(data_dir, split)
    if records and "chosen" in records[0]:
        pairs = [(r["prompt"] + r["chosen"], r["prompt"] + r["rejected"])
                 for r in read_preference_split(split_path(data_dir, split), ("paired",))]
    else:
        pairs = rated_pairs(records[cfg.record_offset::cfg.record_stride], cfg.min_rating_gap, cfg.pairs_per_record,
                            cfg.seed)
    if not pairs:
        raise DataError(f"{split_path(data_dir, split)}: no preference pairs (needs chosen/rejected records, or chat "
                        f"records with meta.ratings at least {cfg.min_rating_gap} apart)")
    return pairs[:limit]


def encode_conversations(tokenizer: Any, conversations: Sequence[list[dict]], max_len: int,
                         where: str) -> list[list[int]]:
    """Token ids of rendered conversations, each one's end kept when too long (the score sits on the last token).
    One batched tokenizer call: per-call overhead dominated when thousands of chats were encoded one by one."""
    if not conversations:
        return []
    texts = [render_chat(tokenizer, messages, where) for messages in conversations]
    cuts = tail_cuts(tokenizer, texts, max_len)
    ids = tokenizer([text[cut:] for text, cut in zip(texts, cuts)], add_special_tokens=False,
                    verbose=False)["input_ids"]
    short = [i for i, (row, cut) in enumerate(zip(ids, cuts)) if cut and len(row) < max_len]
    if short:  # the tail held too few tokens: the whole text, as before
        for i, row in zip(short, tokenizer([texts[i] for i in short], add_special_tokens=False,
                                           verbose=False)["input_ids"]):
            ids[i] = row
    return [trim_tokens(row, max_len, keep="end") for row in ids]


def tail_cuts(tokenizer: Any, texts: Sequence[str], max_len: int) -> list[int]:
    """Where each text's tokenized tail can start: the last special token (an end-of-turn marker) leaving at least
    TAIL_CHARS_PER_TOKEN * max_len characters, else 0. A special token is matched whole and the text after it is
    tokenized on its own, so the tail's ids equal the last ids of the whole text: rated chats run to 800 tokens of
    which 128 are kept, and tokenizing the rest took most of the stage's setup. The equality is checked on the first
    texts; a tokenizer that breaks it gets whole texts (cuts of 0)."""
    markers = [m for m in end_of_turn_markers(tokenizer) if m]
    if not markers:
        return [0] * len(texts)
    pattern = re.compile("|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True)))
    room = TAIL_CHARS_PER_TOKEN * max_len
    cuts = [max((m.start() for m in pattern.finditer(text, 0, max(0, len(text) - room))), default=0)
            for text in texts]
    probe = [i for i, cut in enumerate(cuts) if cut][:TAIL_CHECKS]
    if probe:
        whole = tokenizer([texts[i] for i in probe], add_special_tokens=False, verbose=False)["input_ids"]
        tail = tokenizer([texts[i][cuts[i]:] for i in probe], add_special_tokens=False, verbose=False)["input_ids"]
        if any(len(t) >= max_len and w[-max_len:] != t[-max_len:] for w, t in zip(whole, tail)):
            return [0] * len(texts)
    return cuts


def pair_batches(tokenizer: Any, pairs: list[tuple[list, list]], cfg: RewardConfig, where: str):
    """A function (seed) -> batches: chosen rows then rejected rows, right-padded. Rated chats sit in several pairs
    each (about 2.4 times in the default): every distinct conversation is rendered and tokenized once."""
    unique = {id(messages): messages for pair in pairs for messages in pair}
    ids = dict(zip(unique, encode_conversations(tokenizer, list(unique.values()), cfg.max_seq_len, where)))
    encoded = [(ids[id(c)], ids[id(r)]) for c, r in pairs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def make(seed: Optional[int], batch_size: int):
        order = list(range(len(encoded)))
        if seed is not None:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = [encoded[i] for i in order[start:start + batch_size]]
            rows = [Encoded(ids, [1] * len(ids)) for ids in [c for c, _ in chunk] + [r for _, r in chunk]]
            yield collate(rows, pad)

    return make


def load_reward_head(base: str, tokenizer: Any, train_layers: Optional[int]):
    """AutoModelForSequenceClassification (num_labels=1) over a causal LM's weights; the head starts random."""
    check_exists(base)
    with BUILD_LOCK:  # the verbosity is process-wide too: saved and restored by one builder at a time
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "score.weight newly initialized" is the point here, not news
        try:
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype="float32")
        except Exception as exc:
            raise ModelLoadError(f"{base}: no sequence-classification head for this model ({first_line(exc)})") \
                from None
        finally:
            hf_logging.set_verbosity(level)
    model.config.pad_token_id = tokenizer.pad_token_id
    if train_layers is not None:
        for p in model.parameters():
            p.requires_grad_(False)
        layers = [m for n, m in model.named_modules() if n.endswith("layers")][0]
        for module in [*list(layers)[-train_layers:], model.score]:
            for p in module.parameters():
                p.requires_grad_(True)
    return model


def pairwise_accuracy(model: Any, batches) -> float:
    """Share of held-out pairs whose chosen conversation the model scores above the rejected one."""
    wins, total = 0, 0
    model.eval()
    with torch.no_grad():
        for batch in batches:
            chosen, rejected = RewardBT().rewards(model, batch).chunk(2)
            wins += int((chosen > rejected).sum())
            total += len(chosen)
    model.train()
    return wins / max(total, 1)


def run(cfg: RewardConfig, data_dir: str | Path, base: str | Path, out: str | Path, resume: bool = False) -> Path:
    """The `reward` stage: DATA_DIR (pairs or rated chats) + BASE (any causal LM) -> OUT (a reward model dir)."""
    base_id = resolve_base(base)
    tokenizer, _ = prepare_tokenizer(base_id)
    train_pairs = split_pairs(data_dir, cfg.train_split, cfg, cfg.max_train_pairs)
    val_pairs = split_pairs(data_dir, cfg.val_split, cfg.model_copy(update={"record_offset": 0, "record_stride": 1}),
                            cfg.max_val_pairs)
    train_b = pair_batches(tokenizer, train_pairs, cfg, f"{data_dir}/{cfg.train_split}")
    val_b = pair_batches(tokenizer, val_pairs, cfg, f"{data_dir}/{cfg.val_split}")
    model = load_reward_head(base_id, tokenizer, cfg.train_layers)
    loop = cfg.train.model_copy(update={"seed": cfg.seed})
    with open_artifact(out, "reward", to_dict(cfg), {"data": data_dir, "base": base_id},
                       resumable=True, resume=resume) as art:
        before = pairwise_accuracy(model, val_b(None, loop.batch_size))
        result = train_loop(model, lambda epoch: train_b(cfg.seed * 1_000_003 + epoch, loop.batch_size),
                            lambda: val_b(None, loop.batch_size), loop, art.dir, resume=resume, desc="reward",
                            objective=RewardBT(cfg.center_rewards))
        accuracy = pairwise_accuracy(model, val_b(None, loop.batch_size))
        model.save_pretrained(art.dir)
        tokenizer.save_pretrained(art.dir)
        art.metrics = {"val_pairwise_accuracy": accuracy, "val_pairwise_accuracy_before": before,
                       "train_pairs": len(train_pairs), "val_pairs": len(val_pairs), "train_loss": result.train_loss,
                       "val_loss": result.val_loss, "val_loss_batches": result.val_rows, "steps": result.steps,
                       "seconds": round(result.seconds, 2)}
        art.extra = {"base": base_id, "head": "AutoModelForSequenceClassification(num_labels=1)"}
    say(f"reward: wrote {out} (held-out pairwise accuracy {before:.3f} -> {accuracy:.3f} on {len(val_pairs)} pairs)")
    return Path(out)


class RewardModel:
    """A trained reward model for scoring conversations (judging, ranking rollouts, GRPO)."""

    def __init__(self, path: str | Path, max_seq_len: int = 512):
        check_exists(path, "reward model")
        self.path, self.max_seq_len = str(path), max_seq_len
        self.tokenizer = load_tokenizer_for(path)
        try:
            with BUILD_LOCK:
                self.model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype="float32").eval()
        except Exception as exc:
            raise ModelLoadError(f"{path}: reward model does not load ({first_line(exc)})") from None

    def score(self, conversations: Sequence[list[dict]], batch_size: int = 16) -> list[float]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[float] = []
        encoded = encode_conversations(self.tokenizer, conversations, self.max_seq_len, "reward input")  # one check
        for start in range(0, len(encoded), batch_size):
            batch = collate([Encoded(ids, [1] * len(ids)) for ids in encoded[start:start + batch_size]], pad)
            with torch.no_grad():
                out += self.model(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"]).logits[:, 0].float().tolist()
        return out
