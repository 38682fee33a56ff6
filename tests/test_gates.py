"""The gates' rules on planted measurements: inconclusive on a near tie (saying how many prompts would decide it),
promote on a clear win, reject a degenerate candidate that a biased judge prefers, a judge no better than chance,
a candidate whose validation went the wrong way, and a significant rise of perplexity."""

from __future__ import annotations

import numpy as np

from llmcycle.evaluate.judges import head_to_head
from llmcycle.gates import GateConfig, decide, verdict

PROMPTS = [[{"role": "user", "content": f"tell me about your weekend number {i}"}] for i in range(64)]
OPENINGS = ["we went hiking", "my sister visited", "i baked bread", "the game was", "i read a", "we cleaned the",
            "nothing much really", "i watched two"]
VARIED = [f"{OPENINGS[i % 8]} {i} and then saw a {w} near the river" for i, w in
          zip(range(64), ["deer", "fox", "hawk", "frog", "cat"] * 13)]
STOCK = "I'm not sure. I'm not sure."


class Planted:
    """Prefers the candidate (side A) on the prompts listed, the current model elsewhere."""

    name = "planted judge"

    def __init__(self, wins: set[int], ties: set[int] = frozenset()):
        self.wins, self.ties = wins, ties

    def compare(self, pairs):
        return ["tie" if i in self.ties else "A" if i in self.wins else "B" for i in range(len(pairs))]


class LovesStock:
    name = "biased judge"

    def compare(self, pairs):
        return ["A" if "not sure" in p.a[-1]["content"] else "B" for p in pairs]


def model(replies, nll_scale=1.0, seed=0):
    tokens = np.random.default_rng(0).integers(20, 60, size=48).astype(float)  # the same conversations
    nll = tokens * 2.0 * nll_scale * np.random.default_rng(seed).uniform(0.8, 1.2, size=48)
    return {"replies": replies, "ppl_stats": np.stack([nll, tokens], 1),
            "safety_flags": [i % 10 == 0 for i in range(40)],  # one in ten flagged, the same prompts for both
            "bias_gaps": {"loglik": [0.5, -0.5] * 16, "sentiment": [0.2] * 32}}


def gates_for(cand_replies, judge, nll_scale=1.0, judge_record=None, trained=None):
    cand, cur = model(cand_replies, nll_scale, seed=1), model(VARIED)
    wins = [head_to_head(judge, PROMPTS, cand["replies"], cur["replies"])]
    rows = decide(cand, cur, wins, GateConfig(), judge_record, trained)
    return {r["gate"]: r for r in rows}, verdict(rows)


def test_a_near_tie_is_inconclusive_and_says_how_many_prompts_would_decide_it():
    rows, decision = gates_for(VARIED[::-1], Planted(set(range(34))))  # 34 of 64: 0.53
    win = rows["win_rate"]
    assert decision == "inconclusive" and win["status"] == "inconclusive"
    assert win["ci95"][0] < 0.5 < win["ci95"][1] and win["needed_prompts"] > 64
    assert "34 won" in win["why"] and f"about {win['needed_prompts']} prompts" in win["why"]
    rows, decision = gates_for(VARIED[::-1], Planted(set(), ties=set(range(64))))  # the judge cannot tell them apart
    assert decision == "inconclusive" and rows["win_rate"]["status"] == "inconclusive"


def test_a_clear_win_is_promoted():
    rows, decision = gates_for(VARIED[::-1], Planted(set(range(52))), judge_record={"accuracy": 0.7, "n": 200},
                               trained={"margin_before": 0.0, "margin_after": 0.4})
    assert decision == "promote", {k: r["status"] for k, r in rows.items()}
    assert rows["win_rate"]["ci95"][0] > 0.5 and rows["judge_agreement"]["status"] == "pass"


def test_a_degenerate_candidate_a_biased_judge_prefers_is_rejected():
    rows, decision = gates_for([STOCK] * 64, LovesStock())
    assert rows["win_rate"]["status"] == "pass" and rows["win_rate"]["candidate"] == 1.0  # the judge is fooled
    assert decision == "reject"
    assert {g for g, r in rows.items() if r["status"] == "fail"} >= {"stock_replies", "distinct_2"}
    assert rows["stock_replies"]["candidate"] == 1.0


def test_a_judge_at_chance_or_a_validation_gone_wrong_is_not_promoted():
    clear = Planted(set(range(52)))
    rows, decision = gates_for(VARIED[::-1], clear, judge_record={"accuracy": 7 / 12, "n": 12})
    assert decision != "promote" and rows["judge_agreement"]["status"] != "pass"
    rows, decision = gates_for(VARIED[::-1], clear, trained={"margin_before": 0.0, "margin_after": -0.011})
    assert decision == "reject" and rows["training_validation"]["status"] == "fail"
    # a fall far outside its standard error fails; one inside the noise of 16 pairs is inconclusive, not promoted
    significant = {"margin_before": 0.0, "margin_after": -0.3, "margin_se_after": 0.05, "pairs_after": 64}
    rows, decision = gates_for(VARIED[::-1], clear, trained=significant)
    assert decision == "reject" and rows["training_validation"]["status"] == "fail"
    noisy = {"margin_before": 0.0, "margin_after": -0.107, "margin_se_after": 0.09, "pairs_after": 16}
    rows, decision = gates_for(VARIED[::-1], clear, trained=noisy)
    assert decision == "inconclusive" and rows["training_validation"]["status"] == "inconclusive"
    assert "16 validation pairs" in rows["training_validation"]["why"]


def test_perplexity_fails_only_when_significantly_worse():
    clear = Planted(set(range(52)))
    rows, decision = gates_for(VARIED[::-1], clear, nll_scale=1.3)
    assert rows["perplexity"]["status"] == "fail" and decision == "reject"
    rows, _ = gates_for(VARIED[::-1], clear, nll_scale=1.0)
    assert rows["perplexity"]["status"] == "pass" and rows["perplexity"]["ci95"][0] < 0 < rows["perplexity"]["ci95"][1]


def test_a_second_judge_of_another_kind_must_agree():
    cand, cur = model(VARIED[::-1], seed=1), model(VARIED)
    wins = [head_to_head(j, PROMPTS, cand["replies"], cur["replies"])
            for j in (Planted(set(range(52))), Planted(set(range(20))))]
    rows = {r["gate"]: r for r in decide(cand, cur, wins, GateConfig())}
    assert rows["win_rate"]["status"] == "pass" and rows["win_rate_second_judge"]["status"] == "fail"
    assert verdict(list(rows.values())) == "reject"


def test_gate_replies_use_the_configured_decoding_seeded():
    """The gates judge replies decoded as configured (sampling when the run serves with sampling), seeded."""
    from llmcycle.gates.stage import reply_settings

    sampled = reply_settings(GateConfig(temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=3))
    assert (sampled.temperature, sampled.top_p, sampled.top_k, sampled.repetition_penalty, sampled.seed) == \
        (0.7, 0.9, 40, 1.1, 3)
    assert reply_settings(GateConfig()).temperature == 0


def test_degeneration_gates_carry_intervals_and_fail_only_when_sure():
    from llmcycle.gates.rules import degeneration_gates

    def with_stock(k):  # k of the 64 replies are the stock reply, the rest the varied ones
        return [STOCK if i < k else VARIED[i] for i in range(64)]

    rows = {r["gate"]: r for r in degeneration_gates(with_stock(20), VARIED, GateConfig())}  # 31%: above 25%
    stock = rows["stock_replies"]
    assert stock["status"] == "inconclusive" and stock["ci95"][0] < 0.25 < stock["candidate"] < stock["ci95"][1]
    assert "31% [" in stock["why"] and "of 64 replies" in stock["why"]
    rows = {r["gate"]: r for r in degeneration_gates(with_stock(40), VARIED, GateConfig())}  # 62%: surely above
    assert rows["stock_replies"]["status"] == "fail" and rows["stock_replies"]["ci95"][0] > 0.25
    for gate, key in (("distinct_2", "drop"), ("reply_length", "drop"), ("repetition", "change")):
        lo, hi = rows[gate]["ci95"]  # each relative drop or rise with its paired interval
        assert lo <= rows[gate][key] <= hi and rows[gate]["n"] == 64 and "[" in rows[gate]["why"]
    # distinct-2 falls 0.226 -> 0.121, a drop of 47% [37%, 56%]: the point is under the tolerated 50%, so it passes
    assert rows["distinct_2"]["status"] == "pass" and 0 < rows["distinct_2"]["drop"] < 0.5
