"""The assistant-only label mask: exactly the assistant tokens plus their end-of-turn token, for any template."""

from __future__ import annotations

import pytest

from llmcycle.errors import DataError
from llmcycle.records import write_jsonl
from llmcycle.train.sft_data import IGNORE, SplitStats, build_examples, conversation_examples, \
    end_of_turn_markers, generation_mask, prefix_render_example, tokenize_with_mask

CHAT = [
    {"role": "system", "content": "be kind"},
    {"role": "user", "content": "hello there, how are you?"},
    {"role": "assistant", "content": "i am doing well, thanks!"},
    {"role": "user", "content": "what did you do this weekend?"},
    {"role": "assistant", "content": "we went up to the mountains."},
]

ASSISTANT_TURNS_IM_END = ["i am doing well, thanks!<|im_end|>", "we went up to the mountains.<|im_end|>"]


def labelled_runs(tok, example):
    """Decoded text of each maximal run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


def test_our_template_mask_is_assistant_turns_plus_im_end(our_tokenizer):
    ex = tokenize_with_mask(our_tokenizer, CHAT, "chat")
    assert labelled_runs(our_tokenizer, ex) == ASSISTANT_TURNS_IM_END
    assert ex.input_ids == our_tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]


def test_prefix_render_mask_equals_the_generation_marker_mask(our_tokenizer):
    """The method used for templates without markers, checked where the template's own markers say the truth."""
    ex = prefix_render_example(our_tokenizer, CHAT, "chat", end_of_turn_markers(our_tokenizer))
    ours = [int(x != IGNORE) for x in ex.labels]
    assert ours == generation_mask(our_tokenizer, CHAT)
    assert ex == tokenize_with_mask(our_tokenizer, CHAT, "chat")  # the marker path gives the same example
    assert sum(ours) > 10


def test_end_of_turn_is_trained_even_when_markers_leave_it_out(our_tokenizer):
    our_tokenizer.chat_template = our_tokenizer.chat_template.replace(
        "{{ '<|im_end|>' }}{% endgeneration %}", "{% endgeneration %}{{ '<|im_end|>' }}")
    assert "<|im_end|>" not in "".join(
        our_tokenizer.decode([i]) for i, m in zip(
            our_tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"],
            generation_mask(our_tokenizer, CHAT)) if m)
    ex = tokenize_with_mask(our_tokenizer, CHAT, "chat")
    assert labelled_runs(our_tokenizer, ex) == ASSISTANT_TURNS_IM_END


def test_phi3_template_without_generation_markers(phi3_tokenizer):
    assert generation_mask(phi3_tokenizer, CHAT) is None  # no markers: only the prefix-render method can work
    ex = tokenize_with_mask(phi3_tokenizer, CHAT, "chat")
    assert labelled_runs(phi3_tokenizer, ex) == ["i am doing well, thanks!<|end|>",
                                                 "we went up to the mountains.<|end|>"]
    # the template closes a whole conversation with the EOS <|im_end|> after the last <|end|>: not a turn's token
    assert phi3_tokenizer.decode(ex.input_ids[-1:]) == "<|im_end|>" and ex.labels[-1] == IGNORE
    end_id = phi3_tokenizer.convert_tokens_to_ids("<|end|>")
    ends = [i for i, t in enumerate(ex.input_ids) if t == end_id]
    assert [ex.labels[i] != IGNORE for i in ends] == [False, False, True, False, True]  # sys, user, asst, user, asst


def test_markers_include_eos_and_role_tokens(phi3_tokenizer):
    markers = end_of_turn_markers(phi3_tokenizer)
    assert markers[0] == phi3_tokenizer.eos_token and "<|end|>" in markers


@pytest.mark.parametrize("fixture", ["our_tokenizer", "phi3_tokenizer"])
def test_long_conversation_is_split_at_turns(fixture, request):
    tok = request.getfixturevalue(fixture)
    turns = [{"role": "system", "content": "be kind"}]
    for i in range(6):
        turns += [{"role": "user", "content": f"question number {i} about the lake?"},
                  {"role": "assistant", "content": f"answer number {i} about the mountains."}]
    whole = tokenize_with_mask(tok, turns, "chat")
    limit = len(whole) // 3
    stats = SplitStats()
    pieces = conversation_examples(tok, turns, "chat", limit, stats, end_of_turn_markers(tok))
    assert stats.split_conversations == 1 and len(pieces) >= 3
    assert all(len(p) <= limit for p in pieces)
    runs = [r for p in pieces for r in labelled_runs(tok, p)]
    end = "<|im_end|>" if fixture == "our_tokenizer" else "<|end|>"
    assert runs == [f"answer number {i} about the mountains.{end}" for i in range(6)]
    assert all(tok.decode(p.input_ids).count("be kind") == 1 for p in pieces)  # system prompt kept in each piece


def test_an_exchange_longer_than_the_limit_is_truncated_keeping_its_labels(our_tokenizer):
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 80}]
    whole = tokenize_with_mask(our_tokenizer, chat, "chat")
    stats = SplitStats()
    (piece,) = conversation_examples(our_tokenizer, chat, "chat", 40, stats, end_of_turn_markers(our_tokenizer))
    assert len(piece) == 40 and stats.truncated_examples == 1
    assert piece.labels == whole.labels[:40]


def test_record_without_messages_names_file_and_line(tmp_path, our_tokenizer):
    write_jsonl(tmp_path / "train.jsonl", [{"messages": CHAT}, {"text": "plain"}])
    with pytest.raises(DataError, match=r"train.jsonl:2: record has no 'messages'"):
        build_examples(our_tokenizer, tmp_path, "train", 128)


def test_conversation_without_assistant_names_file_and_line(tmp_path, our_tokenizer):
    write_jsonl(tmp_path / "train.jsonl", [{"messages": CHAT}, {"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"train.jsonl:2: conversation has no assistant turn"):
        build_examples(our_tokenizer, tmp_path, "train", 128)


def test_base_without_template_or_chatml_tokens_ends_turns_with_its_eos(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llmcycle.train.finetune import prepare_tokenizer
    from tests.conftest import SENTENCES

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>").save_pretrained(tmp_path)
    tok, source = prepare_tokenizer(str(tmp_path))
    assert source.startswith("llmcycle") and len(tok) == 300  # no tokens added: the base's embeddings suffice
    ex = tokenize_with_mask(tok, CHAT, "chat")
    assert labelled_runs(tok, ex) == ["i am doing well, thanks!<eos>", "we went up to the mountains.<eos>"]
    assert [int(x != IGNORE) for x in ex.labels] == generation_mask(tok, CHAT)


def test_only_what_the_run_consumes_is_tokenized_but_every_record_is_checked(tmp_path, our_tokenizer):
    from tests.conftest import chat_records

    records = chat_records(30)
    write_jsonl(tmp_path / "train.jsonl", records)
    examples, stats = build_examples(our_tokenizer, tmp_path, "train", 128, token_budget=200, sample_seed=1)
    assert stats.conversations == 30 and 0 < stats.tokenized_conversations < 30
    assert stats.tokens >= 200 and len(examples) == stats.tokenized_conversations
    again, _ = build_examples(our_tokenizer, tmp_path, "train", 128, token_budget=200, sample_seed=1)
    assert [e.input_ids for e in again] == [e.input_ids for e in examples]  # the sample is seeded
    write_jsonl(tmp_path / "train.jsonl", records + [{"text": "no chat"}])
    with pytest.raises(DataError, match="train.jsonl:31"):
        build_examples(our_tokenizer, tmp_path, "train", 128, token_budget=200, sample_seed=1)
