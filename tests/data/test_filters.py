"""Every cleaning/filtering step: a record it must remove (or change) and one it must keep, plus the switches."""

from __future__ import annotations

import random

from llmcycle.data import DataConfig, run
from llmcycle.data.clean import conversation_length, normalize, normalize_text, turn_length
from llmcycle.data.dedup import exact_dedup, near_dedup
from llmcycle.data.example import Example
from llmcycle.data.pii import scrub, scrub_pii
from llmcycle.data.toxicity import filter_toxicity

CFG = DataConfig()


def chat(*turns: str, group: str = "g", variant: str = "") -> Example:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    return Example({"messages": messages, "meta": {}}, group=group, variant=variant)


def long_text(seed: int, words: int = 60) -> str:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)]
    return " ".join(rng.choice(vocab) for _ in range(words))


def test_normalize_fixes_unicode_and_whitespace_and_keeps_clean_text():
    assert normalize_text("  Ｈｅｌｌｏ\u00a0\u00a0wor\u200bld\x07 \r\n\r\n\r\n\tbye ") == "Hello world\n\nbye"
    examples, report = normalize([chat("ﬁne   thanks", "ok"), chat("fine thanks", "ok")], CFG)
    assert examples[0].record["messages"][0]["content"] == "fine thanks"
    assert report.changed == 1 and report.removed == 0


def test_turn_length_drops_empty_turns_cuts_at_long_ones_and_trims_edges():
    cfg = DataConfig(max_turn_chars=50)
    examples, report = turn_length(
        [chat("hi", "", "anyone there?", "yes"),       # empty turn: dropped, the user's two turns merged
         chat("a", "b", "x" * 60, "c"),               # too long: conversation ends before it
         chat("hello", "hi there")],                  # fine: kept as is
        cfg,
    )
    assert examples[0].record["messages"] == [{"role": "user", "content": "hi\nanyone there?"},
                                             {"role": "assistant", "content": "yes"}]
    assert [m["content"] for m in examples[1].record["messages"]] == ["a", "b"]
    assert [m["content"] for m in examples[2].record["messages"]] == ["hello", "hi there"]
    assert report.changed == 2 and report.details["turns_dropped"] == 1 and report.details["cut_at_long_turn"] == 1
    trimmed, _ = turn_length([Example({"messages": [{"role": "assistant", "content": "hey"},
                                                    {"role": "user", "content": "yo"},
                                                    {"role": "assistant", "content": "sup"},
                                                    {"role": "user", "content": "bye"}]}, "g")], cfg)
    assert [m["content"] for m in trimmed[0].record["messages"]] == ["yo", "sup"]


def test_conversation_length_removes_too_short_and_too_long():
    cfg = DataConfig(min_turns=2, max_turns=4)
    kept, report = conversation_length([chat("only a user turn"), chat("q", "a"), chat(*"abcdef")], cfg)
    assert [len(e.record["messages"]) for e in kept] == [2]
    assert report.removed == 2 and report.details == {"too_short": 1, "too_long": 1}


def test_pii_replaces_contacts_and_keeps_ordinary_numbers():
    text = ("mail jane.doe+news@example.co.uk, call (212) 555-0199 or +44 20 7946 0958, see https://x.org/a?b=1. "
            "or www.example.com, server 192.168.10.1")
    assert scrub(text) == "mail <EMAIL>, call <PHONE> or <PHONE>, see <URL>. or <URL>, server <IP>"
    ordinary = "In 1999-2004 I paid $1,000,000 at 12:30 on 2018-05-02, version 3.11, e.g. 3 kids."
    assert scrub(ordinary) == ordinary
    examples, report = scrub_pii([chat("my email is a@b.com", "ok"), chat(ordinary, "ok")], CFG)
    assert examples[0].record["messages"][0]["content"] == "my email is <EMAIL>"
    assert report.changed == 1 and report.details["replaced"]["email"] == 1


def test_toxicity_removes_slurs_and_heavy_profanity_keeps_mild_and_innocent_words():
    severe = chat("you are a f@ggot", "what?")
    heavy = chat("fuck this shit", "fucking hell")
    mild = chat(long_text(1) + " well shit", long_text(2))  # one profane word in 120: kept
    innocent = chat("I grew up in Scunthorpe near the cocktail bar", "lovely, don't kill yourself with homework")
    kept, report = filter_toxicity([severe, heavy, mild, innocent], CFG)
    assert kept == [mild, innocent]
    assert report.removed == 2 and report.details == {"severe": 1, "profane": 1}


def test_exact_dedup_ignores_case_and_spacing_but_not_roles_or_views():
    a, b = chat("Hello  there", "Hi!"), chat("hello there", "hi!")
    other = chat("hello there", "bye!")
    view = chat("hello there", "hi!", variant="first")
    kept, report = exact_dedup([a, b, other, view], CFG)
    assert kept == [a, other, view] and report.removed == 1


def test_near_dedup_removes_near_copies_keeps_distinct():
    base = long_text(7, 80)
    near = base.replace("w1 ", "w2 ", 1) + " w9"
    distinct = long_text(8, 80)
    examples = [chat(base, "yes", group="a"), chat(near, "yes", group="b"), chat(distinct, "yes", group="c")]
    kept, report = near_dedup(examples, CFG)
    assert [e.group for e in kept] == ["a", "c"] and report.removed == 1


def test_near_dedup_group_mode_keeps_all_and_merges_their_groups():
    base = long_text(7, 80)
    examples = [chat(base, "yes", group="b"), chat(base + " w1", "yes", group="a"),
                chat(long_text(9, 80), "yes", group="c")]
    kept, report = near_dedup(examples, DataConfig(near_dedup="group"))
    assert len(kept) == 3 and report.removed == 0
    assert [e.group for e in kept] == ["a", "a", "c"] and report.details["groups_merged"] == 1


def test_every_step_is_counted_and_can_be_switched_off(tmp_path, h):
    rows = [
        {"prompt": "write me at bob@example.com " + long_text(1), "response": long_text(2)},
        {"prompt": "write me at bob@example.com " + long_text(1), "response": long_text(2)},  # exact copy
        {"prompt": "you kike", "response": "no"},  # severe term
        {"prompt": long_text(3), "response": long_text(4)},
    ]
    path = h.write_jsonl(tmp_path / "rows.jsonl", rows)
    on = h.card(run(DataConfig(source="jsonl", path=str(path)), tmp_path / "on"))
    assert [f["step"] for f in on["filters"]] == ["normalize", "turn_length", "conversation_length", "pii",
                                                  "toxicity", "exact_dedup", "near_dedup", "decontaminate"]
    assert h.step(on, "pii")["changed"] == 2 and h.step(on, "toxicity")["removed"] == 1
    assert h.step(on, "exact_dedup")["removed"] == 1 and on["records_written"] == 2
    off_cfg = DataConfig(source="jsonl", path=str(path), normalize=False, turn_length=False,
                         conversation_length=False, pii=False, toxicity=False, exact_dedup=False, near_dedup="off",
                         decontaminate="off")
    off_dir = run(off_cfg, tmp_path / "off")
    off = h.card(off_dir)
    assert all(not f["enabled"] for f in off["filters"]) and off["records_written"] == 4
    assert any("bob@example.com" in r["messages"][0]["content"] for r in h.all_records(off_dir))
