"""Every source reader, through the stage's `run`: Cornell (folder and zip), chitchat, JSONL kinds, plain text."""

from __future__ import annotations

import json
import random

from llmcycle.data import DataConfig, run
from llmcycle.records import check_chat


def cornell_cfg(path, **kw) -> DataConfig:
    return DataConfig(source="cornell", path=str(path), val_frac=0.2, test_frac=0.2, **kw)


def by_conversation(records: list[dict]) -> dict[tuple, dict]:
    return {(r["meta"]["movie_id"], r["meta"]["conversation"], r["meta"]["view"]): r for r in records}


def test_cornell_folder_reads_latin1_empty_utterance_and_out_of_order_lines(cornell_dir, tmp_path, h):
    out = run(cornell_cfg(cornell_dir), tmp_path / "data")
    records = h.all_records(out)
    assert len(records) == 24  # 6 movies x 4 conversations, one view each
    first = by_conversation(records)[("m0", 0, "second")]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    # the ISO-8859-1 line decoded; the empty utterance dropped and the speaker's two lines around it merged
    assert first["messages"][1]["content"].startswith("Un café crème, s'il vous plaît.\n")
    meta = first["meta"]
    assert meta["line_ids"] == ["L1", "L2", "L3", "L4"]
    assert (meta["title"], meta["year"], meta["genres"]) == ("movie number 0", 1990, ["comedy", "drama"])
    assert meta["characters"] == {"user": "ALICE0", "assistant": "BOB0"}
    other = by_conversation(records)[("m3", 13, "second")]
    assert len(other["messages"]) == 4  # lines were written in reverse order and still come out in order
    for record in records:
        check_chat(record, "record", need_assistant=True)
    source = h.card(out)["source"]
    assert source["conversations_read"] == 24 and source["unresolvable_skipped"] == 0
    assert set(source["files"]) == {"movie_lines.txt", "movie_conversations.txt", "movie_titles_metadata.txt",
                                    "movie_characters_metadata.txt"}


def test_cornell_zip_gives_the_same_records_as_the_folder(cornell_dir, cornell_zip, tmp_path, h):
    from_dir = run(cornell_cfg(cornell_dir), tmp_path / "a")
    from_zip = run(cornell_cfg(cornell_zip), tmp_path / "b")
    for split in ("train", "val", "test"):
        assert (from_dir / f"{split}.jsonl").read_bytes() == (from_zip / f"{split}.jsonl").read_bytes()


def test_cornell_speaker_option_and_both_views(cornell_dir, tmp_path, h):
    first = h.all_records(run(cornell_cfg(cornell_dir, cornell_assistant="first"), tmp_path / "first"))
    both_dir = run(cornell_cfg(cornell_dir, cornell_assistant="both"), tmp_path / "both")
    both = h.all_records(both_dir)
    record = by_conversation(first)[("m3", 13, "first")]
    # ALICE speaks first and is the assistant: her opening line is trimmed, BOB asks, ALICE answers
    assert record["meta"]["characters"] == {"user": "BOB3", "assistant": "ALICE3"}
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
    views = {r["meta"]["view"] for r in both}
    # both views survive dedup; the "first" view of m0's first conversation has no user turn that ALICE answers
    # once her empty line is dropped, so it goes
    assert views == {"first", "second"} and len(both) == 47
    split_of: dict[int, set] = {}
    for split in ("train", "val", "test"):
        for record in h.read_split(both_dir, split):
            split_of.setdefault(record["meta"]["conversation"], set()).add(split)
    assert all(len(splits) == 1 for splits in split_of.values())  # the two views never straddle splits


def test_cornell_unresolvable_conversation_is_skipped_and_counted(tmp_path, h):
    corpus = h.write_cornell(tmp_path / "corpus", missing_ids=2)
    out = run(cornell_cfg(corpus), tmp_path / "data")
    source = h.card(out)["source"]
    assert source["unresolvable_skipped"] == 2 and source["conversations_read"] == 26
    assert len(h.all_records(out)) == 24


def test_chitchat_file_joins_consecutive_messages_of_one_sender(tmp_path, h):
    def msg(text, sender):
        return {"text": text, "timestamp": "2018-05-02T19:38:15Z", "sender": sender}

    data = {
        f"c{i}": {
            "messages": [
                [msg(f"hello number {i} " + h.sentence(random.Random(i)), "a"), msg("how are you", "a")],
                [msg(f"fine thanks {i}", "b")],
                [msg("and the weather?", "b")],  # same sender again in a new list: still one turn
                [msg(f"sunny here {i}", "a")],
            ],
            "prompt": "weather",
            "start": "2018-05-02T19:38:15Z",
        }
        for i in range(10)
    }
    path = tmp_path / "chitchat.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    out = run(DataConfig(source="chitchat", path=str(path), val_frac=0.2, test_frac=0.2), tmp_path / "data")
    records = {r["meta"]["id"]: r for r in h.all_records(out)}
    assert len(records) == 10
    messages = records["c3"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]  # trailing user turn trimmed
    assert messages[0]["content"].endswith("\nhow are you")
    assert messages[1]["content"] == "fine thanks 3\nand the weather?"
    assert records["c3"]["meta"]["prompt"] == "weather"


def test_real_chitchat_package_with_limit(tmp_path, h):
    out = run(DataConfig(limit=60), tmp_path / "data")
    card = h.card(out)
    assert card["records_read"] == 60 and card["source"]["files"]["dataset.json"]
    records = h.all_records(out)
    assert 0 < len(records) <= 60
    for record in records:
        check_chat(record, "record", need_assistant=True)
        assert record["messages"][0]["role"] == "user" and record["messages"][-1]["role"] == "assistant"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "data" and manifest["config"]["limit"] == 60
    assert set(manifest["outputs"]) >= {"train.jsonl", "val.jsonl", "test.jsonl", "card.json", "card.md"}


def test_jsonl_chat_prompt_response_and_instruction_rows(tmp_path, h):
    rng = random.Random(1)
    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": h.sentence(rng)},
                          {"role": "assistant", "content": h.sentence(rng)}], "meta": {"topic": i}} for i in range(6)]
    pairs = [{"prompt": h.sentence(rng), "response": h.sentence(rng)} for _ in range(6)]
    instructions = [{"instruction": h.sentence(rng), "input": "context " + h.sentence(rng), "output": h.sentence(rng)}
                    for _ in range(6)]
    outs = {}
    for name, rows in (("chat", chat), ("pairs", pairs), ("inst", instructions)):
        path = h.write_jsonl(tmp_path / f"{name}.jsonl", rows)
        outs[name] = h.all_records(run(DataConfig(source="jsonl", path=str(path)), tmp_path / name))
        assert len(outs[name]) == 6
    assert outs["chat"][0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "topic" in outs["chat"][0]["meta"] and outs["chat"][0]["meta"]["source"] == "jsonl"
    assert [m["role"] for m in outs["pairs"][0]["messages"]] == ["user", "assistant"]
    user = outs["inst"][0]["messages"][0]["content"]
    assert "\n\ncontext " in user


def test_jsonl_text_rows_and_text_files(tmp_path, h):
    rng = random.Random(2)
    rows = [{"text": " ".join(h.sentence(rng) for _ in range(3))} for _ in range(5)]
    records = h.all_records(run(DataConfig(source="jsonl", path=str(h.write_jsonl(tmp_path / "t.jsonl", rows))),
                                tmp_path / "a"))
    assert len(records) == 5 and all(set(r) == {"text"} for r in records)

    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.txt").write_text("\n\n".join(h.sentence(rng, 30) for _ in range(8)), encoding="utf-8")
    (folder / "sub" / "two.md").write_text("\n\n".join(h.sentence(rng, 30) for _ in range(8)), encoding="utf-8")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    cfg = DataConfig(source="text", path=str(folder), text_chunk_chars=500)
    out = run(cfg, tmp_path / "b")
    records = h.all_records(out)
    assert all(set(r) == {"text"} for r in records)
    assert 4 <= len(records) <= 16  # paragraphs packed into chunks of about 500 characters
    assert set(h.card(out)["source"]["files"]) == {"one.txt", "sub/two.md"}
