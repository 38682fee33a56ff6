"""Calibration for Wanda: the L2 norm of every decoder Linear's input features over a few batches of real text.

Wanda scores weight W[i, j] by |W[i, j]| * ||X_j||, so a small weight on a loud input survives and a large weight
on an input that is almost always silent does not. One forward pass over the calibration text with hooks on the
Linears collects the per-feature sums of squares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

from llmcycle.errors import DataError
from llmcycle.records import read_jsonl, split_path


def record_text(record: dict[str, Any]) -> str:
    """A `{"text"}` record's text, or a chat record's turns joined (calibration only needs realistic tokens)."""
    if isinstance(record.get("text"), str):
        return record["text"]
    messages = record.get("messages") or []
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


def calibration_texts(data_dir: Path, split: str, samples: int) -> list[str]:
    path = split_path(data_dir, split)
    texts: list[str] = []
    for _, record in read_jsonl(path):
        text = record_text(record).strip()
        if text:
            texts.append(text)
        if len(texts) >= samples:
            break
    if not texts:
        raise DataError(f"{path}: no text to calibrate on (records need 'text' or 'messages')")
    return texts


def token_batches(tokenizer: Any, texts: Iterable[str], length: int, batch: int = 4) -> list[torch.Tensor]:
    """Texts concatenated and cut into rows of `length` tokens (a short tail becomes its own row)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    rows = [ids[i:i + length] for i in range(0, len(ids), length)]
    full = [r for r in rows if len(r) == length] or rows[:1]
    return [torch.tensor(full[i:i + batch]) for i in range(0, len(full), batch)]


def decoder_linears(model: Any) -> dict[str, torch.nn.Linear]:
    """Every Linear inside the decoder layers (not the embedding or the output head), by module name."""
    layers = model.model.layers
    return {f"{i}.{name}": module for i, layer in enumerate(layers) for name, module in layer.named_modules()
            if isinstance(module, torch.nn.Linear)}


@torch.no_grad()
def input_norms(model: Any, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """name -> ||X_j||_2 over all calibration tokens for each input feature j of each decoder Linear."""
    linears = decoder_linears(model)
    sums = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in linears.items()}

    def hook(name: str):
        def collect(_module, inputs, _output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            sums[name] += (x * x).sum(dim=0).cpu()
        return collect

    handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()]
    try:
        for batch in batches:
            model(input_ids=batch.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: total.sqrt().to(torch.float32) for name, total in sums.items()}
