"""The one context policy: prompt fitting, history trimming and token-row truncation, each rule by name."""

from types import SimpleNamespace

import pytest

from llmcycle.errors import DataError
from llmcycle.infer.context import fit_prompt, model_context, prompt_budget, trim_history, trim_tokens
from llmcycle.infer.settings import GenerationSettings


def test_model_context_reads_each_config_family_then_the_tokenizer():
    assert model_context(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512))) == 512
    assert model_context(SimpleNamespace(config=SimpleNamespace(n_positions=1024))) == 1024
    assert model_context(SimpleNamespace(config=SimpleNamespace()), SimpleNamespace(model_max_length=300)) == 300
    huge = SimpleNamespace(model_max_length=10**30)  # tokenizers without a limit report a placeholder
    assert model_context(SimpleNamespace(config=None), huge) == 2048


def test_fit_prompt_shortens_the_reply_and_refuses_a_prompt_with_no_room():
    settings = GenerationSettings(max_new_tokens=50, min_new_tokens=40)
    fitted = fit_prompt([[1] * 10, [1] * 70], settings, 100)
    assert (fitted.max_new_tokens, fitted.min_new_tokens) == (30, 30)
    assert fit_prompt([[1] * 10], settings, 100) is settings
    with pytest.raises(DataError, match="prompt is 100 tokens, the server's context is 100"):
        fit_prompt([[1] * 100], settings, 100, owner="server")
    with pytest.raises(DataError, match="empty prompt"):
        fit_prompt([[1], []], settings, 100)
    assert prompt_budget(100, 30) == 70 and prompt_budget(10, 30) == 1


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "s"}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return messages + [{"role": "user", "content": "last"}]


def test_trim_history_drops_whole_oldest_turns_with_the_fewest_drops():
    messages = conversation(6)  # 14 messages; one token per message in this count
    kept = trim_history(messages, len, 6)
    assert kept == [messages[0], *messages[-5:]]  # system + 2 whole turns + the last message
    assert kept[1]["role"] == "user"
    assert trim_history(messages, len, 100) is messages


def test_trim_history_strict_refuses_what_lenient_hands_on():
    messages = conversation(3)
    with pytest.raises(DataError, match="message too long"):
        trim_history(messages, len, 1)
    assert trim_history(messages, len, 1, strict=False) == [messages[0], messages[-1]]


def test_trim_tokens_named_rules():
    row = list(range(10))
    assert trim_tokens(row, 4, keep="start") == [0, 1, 2, 3]  # fine-tuning: a chat's end goes
    assert trim_tokens(row, 4, keep="end") == [6, 7, 8, 9]  # reward, GRPO: the scored end stays
    # preference rows: token 0 stays, the prompt (before position 5) loses its oldest tokens, then the reply its last
    assert trim_tokens(row, 6, keep="end", keep_first=True, protect_from=5) == [0, 5, 6, 7, 8, 9]
    assert trim_tokens(row, 4, keep="end", keep_first=True, protect_from=5) == [0, 5, 6, 7]
    assert trim_tokens(row, 20) == row
