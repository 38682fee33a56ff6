"""The batch cache's decode step: attention over each row's own columns, with no mask when every row starts at the
same column, gives transformers' logits (and the whole-cache boolean-mask step's) at one row and at rows that
joined with different prompt lengths."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmcycle.infer.batch_cache import BatchCache
from llmcycle.infer.fast_llama import FastLlama


def whole_cache_step(cache: BatchCache, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The step as it was: every column of the cache read, the foreign ones hidden by a boolean mask."""
    cache.make_room(cache.column + 1)
    n, col = len(cache.starts), cache.column
    cache.valid[:n, col] = True
    mask = cache.valid[:n, None, None, :col + 1]
    logits = cache.backend.step_rows([k[:n] for k in cache.keys], [v[:n] for v in cache.values], tokens, positions,
                                     col, mask)
    cache.column = col + 1
    return logits


def reference_logits(model, sequence: list[int]) -> torch.Tensor:
    return model(torch.tensor([sequence])).logits[0, -1].float()


@pytest.mark.parametrize("lengths", [[7], [5, 11, 8]])
def test_decode_step_matches_transformers_and_the_masked_step(make_tiny_model, lengths):
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model("llama"), attn_implementation="eager").eval()
    backend = FastLlama.from_hf(model)
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompts = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]
    fed = torch.randint(3, vocab, (len(lengths), 6), generator=generator)
    masks = []
    real_step_rows = backend.step_rows
    backend.step_rows = lambda *a: masks.append(a[-1]) or real_step_rows(*a)
    with torch.inference_mode():
        caches = [BatchCache(backend, 4, 64), BatchCache(backend, 4, 64)]
        for cache in caches:
            for prompt in prompts:
                _, keys, values = backend.prefill_one(torch.tensor([prompt]))
                cache.insert([k.clone() for k in keys], [v.clone() for v in values])
        for step in range(fed.shape[1]):
            positions = torch.tensor([n + step for n in lengths])
            ours = caches[0].step(fed[:, step], positions)
            masked = whole_cache_step(caches[1], fed[:, step], positions)
            torch.testing.assert_close(ours, masked, atol=1e-5, rtol=1e-5)
            for row, prompt in enumerate(prompts):
                expected = reference_logits(model, prompt + fed[row, :step + 1].tolist())
                torch.testing.assert_close(ours[row], expected, atol=1e-5, rtol=1e-5)
    ours_masks = masks[0::2]
    if len(lengths) == 1:
        assert all(mask is None for mask in ours_masks)  # one row: nothing to hide
    else:
        assert all(mask.dtype == torch.float32 for mask in ours_masks)  # additive, made once per step
        assert ours_masks[0].shape[-1] == max(lengths) + 1  # from the earliest row's start, not the whole cache
