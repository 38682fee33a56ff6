"""Judges and their check against human labels: planted judges on a balanced fixture, position swapping, a tiny
local LLM judge through the engine, a stub OpenAI-compatible server, a tiny reward model, and the bad inputs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from llmcycle.errors import DataError, UserError
from llmcycle.judge_check import HumanPairsConfig, human_pairs, judge_check
from llmcycle.evaluate.judges import (
    CHOICES, JudgeUnavailable, LLMJudge, Pair, judge_messages, load_judge, parse_verdict,
)
from llmcycle.records import write_jsonl


def convo(prompt: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


GOOD, BAD = "a thoughtful, friendly answer", "i'm not sure"
RAW = [(convo(f"question {i}", f"{GOOD} {i}"), convo(f"question {i}", BAD)) for i in range(60)]


class Fixed:
    name = "always A"

    def compare(self, pairs):
        return ["A"] * len(pairs)


class Oracle:
    """Knows which reply people liked (the good one is never the stock phrase)."""

    name = "oracle"

    def compare(self, pairs):
        return ["A" if p.a[-1]["content"] != BAD else "B" for p in pairs]


def balanced_pairs(seed: int = 0) -> list[Pair]:
    from llmcycle.judge_check import balanced

    return balanced(RAW, seed)


def test_a_judge_always_answering_a_agrees_half_the_time_and_an_oracle_always():
    pairs = balanced_pairs()
    labels = [p.label for p in pairs]
    assert 20 <= labels.count("A") <= 40  # the coin balanced the positions
    fixed = judge_check(Fixed(), pairs)
    assert fixed["agreement"] == labels.count("A") / 60 and fixed["ci95"][0] < 0.5 < fixed["ci95"][1]
    assert fixed["n"] == 60 and fixed["ties"] == 0
    oracle = judge_check(Oracle(), pairs)
    assert oracle["agreement"] == 1.0 and oracle["ci95"][0] > 0.9 and oracle["sign_test_p"] < 1e-12


class Backend:
    def __init__(self, rule):
        self.name, self.rule, self.asked = "stub", rule, []

    def choose(self, questions):
        self.asked += questions
        return [self.rule(q[-1]["content"]) for q in questions]


def test_llm_judge_asks_both_orders_and_turns_position_bias_into_ties():
    pairs = balanced_pairs()
    biased = Backend(lambda text: "A")
    assert LLMJudge(biased).compare(pairs) == ["tie"] * 60 and len(biased.asked) == 120

    def prefers_good(text):
        reply_a = text.split("Reply A:\n")[1].split("\n\nReply B:")[0]
        return "B" if reply_a == BAD else "A"

    report = judge_check(LLMJudge(Backend(prefers_good)), pairs)
    assert report["agreement"] == 1.0 and report["ties"] == 0
    question = judge_messages(pairs[0])
    assert question[0]["role"] == "system" and "Reply A:" in question[1]["content"]
    assert "Conversation A:" in judge_messages(Pair(convo("x", "y"), convo("z", "w")))[1]["content"]


def test_parse_verdict_reads_the_first_word():
    assert [parse_verdict(t) for t in ("A", " b.", "Tie", "**A**", "Neither")] == ["A", "B", "tie", "A", "tie"]


def test_a_local_model_judges_by_scoring_the_constrained_choices(make_tiny_model):
    judge = load_judge(make_tiny_model("llama"))
    verdicts = judge.compare(balanced_pairs()[:3])
    assert len(verdicts) == 3 and set(verdicts) <= set(CHOICES)
    assert judge.backend.choose([judge_messages(balanced_pairs()[0])])[0] in CHOICES


def test_a_reward_model_dir_is_a_reward_model_judge(make_tiny_model, tmp_path):
    from llmcycle.loading import load_tokenizer_for
    from llmcycle.train.reward import load_reward_head

    base = make_tiny_model("llama")
    tokenizer = load_tokenizer_for(base)
    load_reward_head(str(base), tokenizer, None).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    judge = load_judge(tmp_path / "rm")
    assert judge.name.startswith("reward model")
    report = judge_check(judge, balanced_pairs()[:8])
    assert report["n"] == 8 and report["agree"] + report["disagree"] + report["ties"] == 8


class StubAPI(BaseHTTPRequestHandler):
    """Answers like an OpenAI-compatible server whose model always prefers the reply shown first."""

    def log_message(self, *args):
        pass

    def send(self, body: dict):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.send({"object": "list", "data": [{"id": "stub", "object": "model", "created": 0, "owned_by": "me"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send({"id": "c", "object": "chat.completion", "created": 0, "model": "stub",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "A."}}]})


def test_an_openai_compatible_server_is_an_llm_judge_and_an_unreachable_one_is_one_line():
    server = HTTPServer(("127.0.0.1", 0), StubAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = load_judge(f"http://127.0.0.1:{server.server_port}/v1")
        assert judge.compare(balanced_pairs()[:2]) == ["tie", "tie"]  # "A" in both orders: position bias
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(JudgeUnavailable, match="not reachable"):
        load_judge(f"http://127.0.0.1:{server.server_port}/v1")
    with pytest.raises(JudgeUnavailable, match="no such judge"):
        load_judge("/no/such/judge")


def test_human_pairs_from_rated_chats_and_feedback_and_none(tmp_path):
    rated = [{"messages": convo(f"hi {i}", f"reply {i}"), "meta": {"ratings": {"witty": i % 10}}} for i in range(40)]
    write_jsonl(tmp_path / "val.jsonl", rated)
    pairs = human_pairs(HumanPairsConfig(data_dir=str(tmp_path), split="val"))
    assert pairs and all(p.label in ("A", "B") for p in pairs)
    better = [p.a if p.label == "A" else p.b for p in pairs]
    worse = [p.b if p.label == "A" else p.a for p in pairs]
    assert all(int(b[0]["content"].split()[1]) % 10 > int(w[0]["content"].split()[1]) % 10
               for b, w in zip(better, worse))

    from llmcycle.feedback.store import FeedbackStore

    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        store.record_response("r1", "m", [{"role": "user", "content": "hey"}], "hello there!", {}, "stop")
        store.record_response("r2", "m", [{"role": "user", "content": "hey"}], "i'm not sure", {}, "stop")
        store.add_preference("r1", "r2")
    fb = human_pairs(HumanPairsConfig(feedback_db=str(db)))
    assert len(fb) == 1 and (fb[0].a if fb[0].label == "A" else fb[0].b)[-1]["content"] == "hello there!"
    with pytest.raises(DataError, match="no human labels"):
        human_pairs(HumanPairsConfig())
    with pytest.raises(UserError):
        judge_check(Fixed(), [Pair(convo("a", "b"), convo("a", "c"))])


def test_identical_replies_are_ties_the_judge_is_never_asked_about():
    from llmcycle.evaluate.judges import head_to_head

    asked = []

    class Noisy:
        name = "noisy"

        def compare(self, pairs):  # a judge whose scores differ a hair for the same text would call these A
            asked.extend(pairs)
            return ["A"] * len(pairs)

    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    result = head_to_head(Noisy(), prompts, ["same", "x", "same", "y"], ["same", "z", "same", "w"])
    assert result["verdicts"] == ["tie", "A", "tie", "A"]
    assert (result["wins"], result["ties"], result["losses"]) == (2, 2, 0)
    assert [p.a[-1]["content"] for p in asked] == ["x", "y"]
    assert head_to_head(Noisy(), prompts[:1], ["same"], ["same"])["ties"] == 1
