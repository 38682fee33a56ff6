"""modeldir: the one place deciding end-of-turn, stop and pad ids, the generation config, and chat-template checks."""

from __future__ import annotations

import pytest


@pytest.fixture
def loud(monkeypatch):
    """Status lines on (tests run quiet), each `say_once` message fresh."""
    from llmcycle.modeldir import chat as modeldir

    monkeypatch.setenv("LLMCYCLE_QUIET", "0")
    monkeypatch.setattr(modeldir, "_said", set())


@pytest.mark.parametrize("style,end,eos", [("phi3", "<|end|>", "<|endoftext|>"), ("chatml", "<|im_end|>", None),
                                           ("generation", "<|im_end|>", None)])
def test_stop_ids_start_with_the_end_of_turn(make_templated_model, style, end, eos):
    from llmcycle.infer import Engine
    from llmcycle.modeldir import end_of_turn_id, stop_token_ids

    engine = Engine.load(make_templated_model(style))
    tok = engine.tokenizer
    expected = [tok.convert_tokens_to_ids(end)] + ([tok.convert_tokens_to_ids(eos)] if eos else [])
    assert end_of_turn_id(tok) == expected[0]
    assert stop_token_ids(tok, engine.model) == expected
    assert engine.eos_token_ids == expected  # the engine stops where fine-tuning taught the turn to end


def test_generation_config_names_the_end_of_turn(make_templated_model, tmp_path):
    """A base whose generation_config.json names only <|endoftext|>: what merge/finetune write also stops on <|end|>."""
    from transformers import AutoTokenizer, GenerationConfig

    from llmcycle.modeldir import write_generation_config

    base = make_templated_model("phi3")
    tok = AutoTokenizer.from_pretrained(base)
    write_generation_config(tmp_path, tok, base=str(base))
    gen = GenerationConfig.from_pretrained(tmp_path)
    assert gen.eos_token_id == [tok.convert_tokens_to_ids("<|end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    assert gen.pad_token_id == tok.pad_token_id


def test_dropped_system_message_is_folded_and_said_once(make_templated_model, loud, capsys):
    from llmcycle.infer import Engine

    engine = Engine.load(make_templated_model("phi3"))
    Engine.load(make_templated_model("phi3"))
    said = capsys.readouterr().err
    assert said.count("drops system messages") == 1 and "(the default" in said
    text = engine.chat_text([{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hi"}])
    assert "<|user|>\nAnswer in French.\n\nhi<|end|>" in text


def test_system_policy_template_keeps_the_template(make_templated_model, loud, capsys):
    from transformers import AutoTokenizer

    from llmcycle.modeldir import drops_system, prepare_template

    tok = AutoTokenizer.from_pretrained(make_templated_model("phi3"))
    assert drops_system(tok)
    prepare_template(tok, "phi3", system="template")
    assert drops_system(tok) and "system_message: fold" in capsys.readouterr().err
    prepare_template(tok, "phi3")
    assert not drops_system(tok)
    folded = tok.chat_template
    prepare_template(tok, "phi3")
    assert tok.chat_template == folded  # folding twice is folding once


def test_finetune_data_keeps_the_system_text(make_templated_model):
    """Fine-tuning renders through the same prepared template, so a system message reaches the model."""
    from llmcycle.train.finetune import prepare_tokenizer
    from llmcycle.train.sft_data import tokenize_with_mask

    tok, source = prepare_tokenizer(str(make_templated_model("phi3")))
    assert "system folded" in source
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi there"}]
    ex = tokenize_with_mask(tok, chat, "chat")
    assert "be brief" in tok.decode(ex.input_ids)
    assert tok.decode([t for t in ex.labels if t != -100]) == "hi there<|end|>"


@pytest.fixture(scope="session")
def templateless_base(tmp_path_factory):
    """A Llama whose tokenizer has no chat template and no <|im_start|>/<|im_end|> tokens (a plain base model)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(["hello there, how are you?", "fine thanks"] * 20, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    out = tmp_path_factory.mktemp("templateless")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, bos_token_id=0, eos_token_id=1)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_templateless_base_chats_without_new_embeddings(templateless_base, loud, capsys):
    from llmcycle.infer import Engine
    from llmcycle.infer.settings import GenerationSettings

    engine = Engine.load(templateless_base)
    assert len(engine.tokenizer) == engine.model.get_input_embeddings().weight.shape[0]  # no rows added
    reply = engine.chat([[{"role": "user", "content": "hello there"}]], GenerationSettings(max_new_tokens=4))[0]
    assert reply.finish_reason in ("eos", "length", "stop")
    assert "has no chat template" in capsys.readouterr().err
    assert engine.eos_token_ids == [engine.tokenizer.eos_token_id]


def test_smollm2_turns_end_with_im_end(smollm2_tokenizer):
    """The real ChatML model: its end-of-turn is its EOS <|im_end|> (id 2), its template keeps system messages, and
    the token fine-tuning trains after a reply is that same id."""
    from llmcycle.modeldir import drops_system, end_of_turn_id, prepare_template, stop_token_ids
    from llmcycle.train.sft_data import tokenize_with_mask

    tok = smollm2_tokenizer
    template = tok.chat_template
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>") == 2
    assert stop_token_ids(tok) == [2] and not drops_system(tok)
    prepare_template(tok, "smollm2")
    assert tok.chat_template == template  # nothing to fold, nothing to add
    ex = tokenize_with_mask(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "c")
    assert [t for t in ex.labels if t != -100][-1] == 2


def test_context_length_is_one_rule_for_every_config_shape():
    from types import SimpleNamespace

    from llmcycle.modeldir import context_length, sliding_window

    assert context_length(SimpleNamespace(max_position_embeddings=512)) == 512
    assert context_length(SimpleNamespace(n_positions=1024)) == 1024  # GPT-2 style
    assert context_length(SimpleNamespace(seq_length=64, max_position_embeddings=None)) == 64
    assert context_length(SimpleNamespace(), default=77) == 77
    assert context_length(SimpleNamespace(config=SimpleNamespace(max_seq_len=96))) == 96  # a model stands for its config
    mistral = SimpleNamespace(max_position_embeddings=32768, sliding_window=4096)
    assert context_length(mistral) == 32768 and sliding_window(mistral) == 4096
    assert context_length(mistral, within_window=True) == 4096
    off = SimpleNamespace(max_position_embeddings=32768, sliding_window=4096, use_sliding_window=False)
    assert sliding_window(off) is None and context_length(off, within_window=True) == 32768
