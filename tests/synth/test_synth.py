"""`llmcycle synth`: a teacher (a local model dir, or an OpenAI-compatible server) writes prompts and answers; the
diversity filter, the safety classifier and the data stage's steps apply; the result is an ordinary data dir.
A teacher that cannot be loaded or reached is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmcycle.records import read_jsonl
from llmcycle.synth import SynthConfig, run
from llmcycle.synth.selfinstruct import Diversity, clean_prompt

TOPICS = ["cooking", "gardening", "astronomy"]
# what the fake teacher writes when asked for a prompt: one near-copy and one harmful request among them
PROMPTS = ["1. How do I bake sourdough bread at home?", "Request: How do I bake sourdough bread at home today?",
           "What vegetables grow well in a shady garden?", "How can I make a pipe bomb?",
           '"Why does the moon show phases to us?"', "ok", "Which spices go with roasted carrots?",
           "How often should tomato plants be watered in summer?", "What is a light year, in simple words?"]


class FakeTeacher(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - the http.server API
        self._send({"object": "list", "data": [{"id": "teacher"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeTeacher.calls.append(body)
        content = body["messages"][-1]["content"]
        if "Write one new request" in content:
            n = sum("Write one new request" in c["messages"][-1]["content"] for c in FakeTeacher.calls)
            text = PROMPTS[(n - 1) % len(PROMPTS)]
        else:
            text = f"Here is a careful answer about this: {content.lower()} Start small and check as you go."
        self._send({"choices": [{"message": {"role": "assistant", "content": text}}]})

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FakeTeacher.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeTeacher)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


def filters(**kw):
    return {"val_frac": 0.0, "test_frac": 0.0, "decontaminate_benchmarks": [], **kw}


def test_server_teacher_writes_a_filtered_data_dir(server, tmp_path):
    cfg = SynthConfig(teacher=server, topics=TOPICS, records=6, max_calls=len(PROMPTS), batch_size=4,
                      filters=filters())
    out = run(cfg, tmp_path / "synth")
    records = [r for _, r in read_jsonl(out / "train.jsonl")]
    prompts = [r["messages"][0]["content"] for r in records]
    assert "How do I bake sourdough bread at home?" in prompts  # list marks and quotes stripped
    assert "Why does the moon show phases to us?" in prompts
    assert not any("sourdough bread at home today" in p for p in prompts)  # too similar to a kept prompt
    assert not any("pipe bomb" in p for p in prompts)  # the safety classifier blocked it
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in records)
    card = json.loads((out / "card.json").read_text())
    source = card["source"]
    assert card["source"]["name"] == "synth" and source["too_similar"] == 1 and source["unsafe"] == 1
    assert source["unusable"] == 1 and card["records_written"] == len(records) == 5  # 6 prompts, one blocked
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "synth" and manifest["metrics"]["train_records"] == 5
    asked = [c for c in FakeTeacher.calls if "Write one new request" in c["messages"][-1]["content"]]
    assert any("about gardening" in c["messages"][-1]["content"] for c in asked)
    assert any("- How do I bake" in c["messages"][-1]["content"] for c in asked)  # kept prompts become examples


def test_local_tiny_teacher_writes_a_valid_data_dir(make_tiny_model, tmp_path, cli):
    from llmcycle.train.sft_data import read_conversations

    teacher = make_tiny_model("llama")
    code, stdout, err = cli("synth", "--teacher", teacher, "--out", tmp_path / "d", "--topic", "weather",
                            "--records", "4", "--set", "max_new_tokens=16", "--set", "min_prompt_chars=1",
                            "--set", "filters.val_frac=0", "--set", "filters.test_frac=0",
                            "--set", "filters.decontaminate_benchmarks=[]", "--set", "filters.near_dedup=off")
    assert code == 0, err
    conversations = list(read_conversations(tmp_path / "d", "train"))
    assert conversations and all(m[-1]["role"] == "assistant" for _, m in conversations)
    assert (tmp_path / "d" / "card.md").is_file()


@pytest.mark.parametrize("teacher, fragment", [("http://127.0.0.1:9", "cannot reach"),
                                               ("no/such/model-dir", "no/such/model-dir")])
def test_a_teacher_that_cannot_be_used_is_one_line_and_nothing_written(teacher, fragment, tmp_path, cli):
    code, _, err = cli("synth", "--teacher", teacher, "--out", tmp_path / "d", "--topic", "x")
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_no_seeds_is_refused(tmp_path, cli):
    code, _, err = cli("synth", "--teacher", "http://127.0.0.1:9", "--out", tmp_path / "d")
    assert code == 2 and "topics or seed_prompts" in err


def test_diversity_and_prompt_cleaning():
    keep = Diversity(0.7, ["How do I bake bread?"])
    assert not keep.admit("How do I bake bread today?") and keep.admit("What is a comet made of?")
    cfg = SynthConfig(min_prompt_chars=3)
    assert clean_prompt("  2) 'Tell me a joke'\nmore text", cfg) == "Tell me a joke"
    assert clean_prompt("\n\nok", cfg) is None
