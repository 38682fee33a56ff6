"""Beam search through transformers' `generate`: rarely used for chat, so the reference implementation serves it."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers import GenerationConfig

from llmcycle.infer.decode import Completion, left_pad


def beam_search(engine: Any, prompts: Sequence[Sequence[int]], settings: Any) -> list:
    """The best beam per prompt, as Completions (stop strings applied to the finished text)."""
    eos = sorted(set(engine.eos_token_ids) | set(settings.stop_token_ids))
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens or None,
        num_beams=settings.num_beams, length_penalty=settings.length_penalty, do_sample=False,
        repetition_penalty=settings.repetition_penalty, no_repeat_ngram_size=settings.no_repeat_ngram_size or None,
        eos_token_id=eos, pad_token_id=engine.pad_token_id, num_return_sequences=1,
    )
    ids, mask = left_pad(prompts, engine.pad_token_id, engine.device)
    with torch.inference_mode():
        out = engine.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    completions = []
    for prompt, row in zip(prompts, out[:, ids.shape[1]:].tolist()):
        new_ids, reason = [], "length"
        for token in row:
            if token in eos:
                reason = "stop" if token in settings.stop_token_ids and token not in engine.eos_token_ids else "eos"
                break
            new_ids.append(token)
        text = engine.tokenizer.decode(new_ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in settings.stop) if i >= 0]
        if hits:
            text, reason = text[:min(hits)], "stop"
        completions.append(Completion(text, new_ids, reason, len(prompt)))
    return completions
