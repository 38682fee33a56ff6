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


def forward_hooked(model: Any, batches: list[torch.Tensor], handles: list[Any]) -> None:
    """Every calibration batch through the model while HANDLES' hooks collect, then the hooks removed."""
    try:
        for batch in batches:
            model(input_ids=batch.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()


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
    forward_hooked(model, batches, handles)
    return {name: total.sqrt().to(torch.float32) for name, total in sums.items()}


@torch.no_grad()
def layer_influence(model: Any, batches: list[torch.Tensor]) -> list[float]:
    """Each decoder layer's Block Influence on the calibration text: 1 - the mean cosine similarity between the
    hidden state it receives and the one it returns, per token (ShortGPT, Men et al. 2024). A layer that barely
    turns its input is the cheapest to remove whole."""
    layers = model.model.layers
    sums, counts = [0.0] * len(layers), [0] * len(layers)

    def hook(index: int):
        def measure(_module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(x.float().reshape(-1, x.shape[-1]),
                                                        y.float().reshape(-1, y.shape[-1]), dim=-1)
            sums[index] += float(cos.sum())
            counts[index] += cos.numel()
        return measure

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    forward_hooked(model, batches, handles)
    return [1.0 - total / max(n, 1) for total, n in zip(sums, counts)]
