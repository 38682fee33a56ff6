"""The packed prompt pass of a padded generation batch gives each row the logits and cache of the prompt run alone."""

from __future__ import annotations

import pytest
import torch

from llmcycle.infer import Engine, GenerationSettings
from llmcycle.infer.decode import left_pad
from llmcycle.infer.fast_llama import _padded_mask
from llmcycle.infer.row_prefill import left_padded

LENGTHS = [7, 19, 3, 12]
STEPS = 3


def prompts(vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in LENGTHS]


def transformers_last_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()


def masked_grid_logits(backend, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The previous prompt pass: the padded [rows, width] grid through an explicit causal-and-padding mask."""
    backend._reserve_cache(ids.shape[0], ids.shape[1] + 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        hidden = backend._forward(ids, backend.freqs[positions], 0, _padded_mask(mask), causal=False)
        return backend._logits(hidden[:, -1])


@pytest.mark.parametrize("arch,extra", [("llama", {}), ("mistral", {"sliding_window": 5})])
def test_packed_prefill_matches_masked_grid_transformers_and_batch_one(make_tiny_model, arch, extra):
    engine = Engine.load(make_tiny_model(arch, **extra))
    backend = engine.backend
    assert engine.backend_name == "fast" and (backend.windows[0] == 5) == bool(extra)
    rows = prompts(engine.model.config.vocab_size)
    ids, mask = left_pad(rows, engine.pad_token_id, "cpu")
    assert left_padded(mask) and not left_padded(mask.flip(-1))
    old = masked_grid_logits(backend, ids, mask)
    backend._reserve_cache(len(rows), ids.shape[1] + STEPS)
    for cache in backend.keys + backend.values:  # stale memory in the padding slots must not reach a reply
        cache.fill_(float("nan"))
    with torch.inference_mode():
        new = backend.start(ids, mask, STEPS)
    reference = transformers_last_logits(engine.model, ids, mask)
    torch.testing.assert_close(new, old, rtol=0, atol=1e-5)
    torch.testing.assert_close(new, reference, rtol=0, atol=1e-5)
    feed = torch.tensor([[5 + r + s for r in range(len(rows))] for s in range(STEPS)])
    with torch.inference_mode():
        batched = [new] + [backend.step(feed[s]) for s in range(STEPS - 1)]
        for r, row in enumerate(rows):  # each row alone (batch 1, no padding) from its prompt on
            alone = [backend.start(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long), STEPS)]
            alone += [backend.step(feed[s, r:r + 1]) for s in range(STEPS - 1)]
            for s in range(STEPS):
                torch.testing.assert_close(batched[s][r], alone[s][0], rtol=0, atol=1e-5)


def test_greedy_replies_of_a_padded_batch_equal_each_prompt_alone(make_tiny_model):
    engine = Engine.load(make_tiny_model("llama"))
    settings = GenerationSettings(max_new_tokens=8, min_new_tokens=8, temperature=0)
    rows = prompts(engine.model.config.vocab_size)
    batched = engine._generate_batch(rows, settings)
    assert [c.token_ids for c in batched] == [engine._generate_batch([r], settings)[0].token_ids for r in rows]
