"""Infilling: the middle a fill-in-the-middle model writes between a prefix and a suffix.

The prompt is exactly what training put before a middle (`llmcycle.modeldir.fim.infill_prompt`, after the
document marker every pretraining text starts with), encoded without the tokenizer's own additions; the
generation stops at the model's EOS or any FIM end marker, and the middle is the text before it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from llmcycle.errors import DataError
from llmcycle.infer.settings import GenerationSettings
from llmcycle.modeldir.fim import END_MARKERS, extract_middle, fim_token_ids, infill_prompt


def infill_ids(tokenizer: Any, prefix: str, suffix: str) -> list[int]:
    """The prompt ids for one (prefix, suffix); the model's tokenizer must hold the FIM markers (one line if not)."""
    fim_token_ids(tokenizer)
    if not prefix and not suffix:
        raise DataError("infill: give a prefix or a suffix (both are empty)")
    text = (tokenizer.bos_token or "") + infill_prompt(prefix, suffix)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def infill_stop_ids(tokenizer: Any, eos_ids: Sequence[int]) -> list[int]:
    """Where a middle ends: the model's EOS ids and every FIM end marker the vocabulary holds."""
    vocab = tokenizer.get_vocab()
    return list(dict.fromkeys([*eos_ids, *(vocab[t] for t in END_MARKERS if t in vocab)]))


def infill(engine: Any, pairs: Sequence[tuple[str, str]], settings: GenerationSettings | None = None,
           batch_size: int = 8) -> list[Any]:
    """One completion per (prefix, suffix), its `text` the middle alone."""
    settings = settings or engine.default_settings
    prompts = [infill_ids(engine.tokenizer, p, s) for p, s in pairs]
    stops = infill_stop_ids(engine.tokenizer, engine.eos_token_ids)
    settings = settings.replace(stop_token_ids=list(dict.fromkeys([*settings.stop_token_ids, *stops])))
    completions = engine.generate_ids(prompts, settings, batch_size)
    return [replace(c, text=extract_middle(c.text, settings.stop)) for c in completions]
