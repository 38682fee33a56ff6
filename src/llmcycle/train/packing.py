"""Pretraining data: records -> one token stream -> fixed-length rows (packing, no padding, no wasted compute).

Chat records are rendered with the tokenizer's chat template (which starts every conversation with the bos token);
text records become bos + text. Documents are concatenated, so the next document's bos is the previous one's end
marker, and the stream is cut into rows of `seq_len` tokens; a row's labels are its own ids (the loss shifts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from llmcycle.errors import DataError
from llmcycle.records import check_chat, read_jsonl, split_path

Transform = Callable[[dict[str, Any], int], dict[str, Any]]  # (record, index in the split) -> record


@dataclass
class PackedSplit:
    rows: Any  # LongTensor [n_rows, seq_len]
    documents: int
    tokens: int  # tokens in the stream before cutting (the remainder of the last row is dropped)


def record_texts(path: Path, tokenizer, transform: Transform | None = None) -> Iterator[str]:
    """The text each record contributes, with file:line errors for records that are neither chat nor text.
    `transform(record, index)` rewrites each record first (the FIM mix of a training split)."""
    bos = tokenizer.bos_token or ""
    for index, (lineno, rec) in enumerate(read_jsonl(path)):
        where = f"{path}:{lineno}"
        if transform is not None and ("messages" in rec or isinstance(rec.get("text"), str)):
            rec = transform(rec, index)
        if "messages" in rec:
            messages = check_chat(rec, where)
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            yield text if not bos or text.startswith(bos) else bos + text
        elif isinstance(rec.get("text"), str):
            if rec["text"].strip():
                yield bos + rec["text"]
        else:
            raise DataError(f"{where}: record has neither 'messages' (chat) nor 'text' (plain text)")


def tokenize_split(path: Path, tokenizer, chunk: int = 512,
                   transform: Transform | None = None) -> tuple[list[int], int]:
    """All documents of a split as one token list (batched through the fast tokenizer)."""
    stream: list[int] = []
    documents = 0
    texts: list[str] = []

    def flush() -> None:
        if texts:
            for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
                stream.extend(ids)
            texts.clear()

    for text in record_texts(path, tokenizer, transform):
        texts.append(text)
        documents += 1
        if len(texts) >= chunk:
            flush()
    flush()
    return stream, documents


def pack(stream: list[int], seq_len: int):
    n_rows = len(stream) // seq_len
    return torch.tensor(stream[: n_rows * seq_len], dtype=torch.long).view(n_rows, seq_len)


def load_packed(data_dir: str | Path, split: str, tokenizer, seq_len: int,
                transform: Transform | None = None) -> PackedSplit:
    path = split_path(data_dir, split)
    stream, documents = tokenize_split(path, tokenizer, transform=transform)
    if documents == 0:
        raise DataError(f"{path}: the {split} split is empty")
    rows = pack(stream, seq_len)
    if rows.shape[0] == 0:
        raise DataError(f"{path}: the {split} split holds {len(stream)} tokens, fewer than one sequence of "
                        f"seq_len={seq_len}")
    return PackedSplit(rows=rows, documents=documents, tokens=len(stream))


def hold_out(train: PackedSplit, fraction: float) -> tuple[PackedSplit, PackedSplit]:
    """Split rows off the end of train for validation, for data dirs without a val split."""
    n_val = max(1, int(round(train.rows.shape[0] * fraction)))
    if train.rows.shape[0] - n_val < 1:
        raise DataError("too little training data to hold out a validation split (add a val split)")
    rows = train.rows
    seq = rows.shape[1]
    return (PackedSplit(rows[:-n_val], train.documents, (rows.shape[0] - n_val) * seq),
            PackedSplit(rows[-n_val:], 0, n_val * seq))


def train_batches_fn(rows, batch_size: int, seed: int):
    """`train_batches(epoch)`: rows in a seeded per-epoch order, full batches only (deterministic, for resume)."""
    def batches(epoch: int) -> Iterator[dict[str, Any]]:
        order = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for start in range(0, rows.shape[0] - batch_size + 1, batch_size):
            ids = rows[order[start:start + batch_size]]
            yield {"input_ids": ids, "labels": ids}

    return batches


def val_batches_fn(rows, batch_size: int):
    def batches() -> Iterator[dict[str, Any]]:
        for start in range(0, rows.shape[0], batch_size):
            ids = rows[start:start + batch_size]
            yield {"input_ids": ids, "labels": ids}

    return batches


def unigram_loss(train_rows, val_rows, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of an add-one unigram model fitted on the train tokens, on exactly the val tokens
    the language model is scored on (every token of a row but the first) - the baseline a model must beat."""
    counts = torch.bincount(train_rows.reshape(-1), minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(-logp[val_rows[:, 1:].reshape(-1)].mean())
