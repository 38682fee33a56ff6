"""`llmcycle tokenizer`: a standard AutoTokenizer dir whose chat template round-trips."""

from __future__ import annotations

from .test_cli_errors import run_cli


def test_tokenizer_cli_round_trips_text_and_chat(tmp_path, chat_data_dir, capsys):
    from transformers import AutoTokenizer

    out = tmp_path / "tok"
    code, _, err = run_cli(capsys, "tokenizer", "--data", str(chat_data_dir), "--out", str(out),
                           "--vocab-size", "400", "--set", "min_frequency=1")
    assert code == 0, err
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 400
    text = "Hello there, how are you doing today? Ünïcödé ✓"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi there"},
                {"role": "assistant", "content": "hello!"}]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered == ("<|endoftext|><|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nhi there<|im_end|>\n"
                        "<|im_start|>assistant\nhello!<|im_end|>\n")
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert tok.decode(ids["input_ids"]) == rendered
    masked = [i for i, m in zip(ids["input_ids"], ids["assistant_masks"]) if m]
    assert tok.decode(masked) == "hello!<|im_end|>"
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
