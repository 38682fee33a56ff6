"""The reward stage: a Bradley-Terry head learns a planted preference and saves as an HF classification model."""

from __future__ import annotations

import json

from tests.align.conftest import MARKER


def test_reward_model_separates_a_planted_preference(pref_data_dir, make_tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from llmcycle.train.reward import RewardConfig, RewardModel, run

    out = tmp_path / "rm"
    cfg = RewardConfig(train={"max_steps": 30, "batch_size": 8, "lr": 3e-3, "warmup_steps": 0, "eval_every": 30,
                              "save_every": 30, "log_every": 5}, max_seq_len=64)
    run(cfg, pref_data_dir, make_tiny_model("llama"), out)
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["val_pairwise_accuracy"] > 0.9
    hf = AutoModelForSequenceClassification.from_pretrained(out)  # the standard tool loads it
    assert hf.config.num_labels == 1
    judge = RewardModel(out)
    prompt = [{"role": "user", "content": "what did you do this weekend?"}]
    good, bad = judge.score([prompt + [{"role": "assistant", "content": f"{MARKER} we went hiking"}],
                             prompt + [{"role": "assistant", "content": "we went hiking okay"}]])
    assert good > bad


def test_pairs_from_ratings_prefer_the_better_rated_chat():
    from llmcycle.train.reward import rated_pairs

    def chat(text, score):
        return {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": text}],
                "meta": {"ratings": {"witty": score, "upbeat": score, "interesting": score}}}

    records = [chat("great", 9), chat("meh", 3), chat("fine", 6), {"messages": [], "meta": {}}]
    pairs = rated_pairs(records, gap=2.0, per_record=8, seed=0)
    assert pairs
    rank = {"great": 9, "meh": 3, "fine": 6}
    assert all(rank[c[-1]["content"]] >= rank[r[-1]["content"]] + 2 for c, r in pairs)


def long_chats(n: int = 12) -> list[list[dict]]:
    """Chats of 30+ turns: far past 32 tokens, with accents, digits and runs of spaces at the turn edges."""
    lines = ["well  i guess so", "héllo there, it's 3pm!", "  okay\n", "what about you?", "naïve café 12,000 words"]
    return [[{"role": "user" if t % 2 == 0 else "assistant", "content": f"{lines[(c + t) % 5]} turn {t}"}
             for t in range(30 + c)] for c in range(n)]


def test_reward_inputs_tokenize_only_the_kept_tail_with_the_same_ids(tiny_tokenizer_dir, make_templated_model,
                                                                     smollm2_tokenizer):
    from transformers import AutoTokenizer

    from llmcycle.infer.context import trim_tokens
    from llmcycle.modeldir import ensure_chat_template, render_chat
    from llmcycle.train.reward import encode_conversations, tail_cuts

    tokenizers = [ensure_chat_template(AutoTokenizer.from_pretrained(tiny_tokenizer_dir)),
                  AutoTokenizer.from_pretrained(make_templated_model("phi3")), smollm2_tokenizer]
    chats = long_chats()
    for tok in tokenizers:
        texts = [render_chat(tok, c, "t") for c in chats]
        assert all(tail_cuts(tok, texts, 32)), tok.name_or_path  # the tail path is taken
        whole = [trim_tokens(tok(t, add_special_tokens=False)["input_ids"], 32, keep="end") for t in texts]
        assert encode_conversations(tok, chats, 32, "t") == whole, tok.name_or_path
