"""Assistant-turn perplexity scores the end-of-turn token fine-tuning trains, on real template shapes: Phi-3
(`<|end|>` ends a turn, EOS is `<|endoftext|>`), ChatML without generation markers, and llmcycle's template with
`{% generation %}` markers. The reference below is an independent count: each reply's tokens plus the literal
end-of-turn token, scored with the model in the full preceding context."""

from __future__ import annotations

import math

import pytest

END_OF_TURN = {"phi3": "<|end|>", "chatml": "<|im_end|>", "generation": "<|im_end|>"}


def independent_nll(model, tok, records, end_token: str) -> tuple[float, int]:
    import torch

    end_id = tok.convert_tokens_to_ids(end_token)
    total, count = 0.0, 0
    for record in records:
        messages = record["messages"]
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            prompt = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            context = tok(prompt, add_special_tokens=False)["input_ids"]
            target = tok(msg["content"], add_special_tokens=False)["input_ids"] + [end_id]
            ids = torch.tensor([context + target])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            for k, token in enumerate(target):
                total -= float(logp[len(context) + k - 1, token])
            count += len(target)
    return total, count


@pytest.mark.parametrize("style", sorted(END_OF_TURN))
def test_turn_perplexity_scores_the_trained_end_of_turn(make_templated_model, chat_data_dir, style):
    from llmcycle.evaluate.perplexity import score_records
    from llmcycle.infer import Engine
    from llmcycle.modeldir import end_of_turn_id
    from llmcycle.records import load_split

    end_token = END_OF_TURN[style]
    engine = Engine.load(make_templated_model(style))
    assert engine.tokenizer.convert_ids_to_tokens(end_of_turn_id(engine.tokenizer)) == end_token
    records = load_split(chat_data_dir, "test")[:6]
    score = score_records(engine.model, engine.tokenizer, records)
    nll, count = independent_nll(engine.model, engine.tokenizer, records, end_token)
    assert score.tokens == count
    assert math.isclose(score.perplexity, math.exp(nll / count), rel_tol=1e-4)
