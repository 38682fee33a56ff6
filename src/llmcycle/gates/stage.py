"""The `gates` stage: does a candidate (an aligned model) beat the current one on data neither was trained on, by
enough that the evidence says so, without degenerating? The rules are in `llmcycle.gates.rules`.

Both models answer the test split's prompts and score its conversations; a judge (a reward model trained on rated
chats disjoint from those the candidate was aligned on, or any judge `load_judge` accepts) compares the replies.
`llmcycle run` trains the judge inside the stage; `llmcycle improve` trains it as a `reward` stage of its own and
gates into the attempt dir (`gate_candidate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from pydantic import Field

from llmcycle.artifacts import atomic_write_json, open_artifact, read_manifest
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import ArtifactError, DataError
from llmcycle.evaluate.bias import BiasTask, load_pairs, pair_gaps, pair_groups
from llmcycle.evaluate.judges import head_to_head, load_judge
from llmcycle.evaluate.perplexity import score_each
from llmcycle.evaluate.safety import SafetyTask, flagged, load_prompts
from llmcycle.evaluate.stats import perplexity_score, relative_change
from llmcycle.evaluate.tasks import Subject, generate
from llmcycle.gates.rules import (PASS, GateConfig, degeneration_gates, judge_gate, perplexity_gate,
                                  probe_gates, report_md, validation_gate, verdict, win_gate)
from llmcycle.infer.engine import Engine
from llmcycle.infer.settings import GenerationSettings
from llmcycle.loading import is_adapter_dir
from llmcycle.merge import MergeConfig, run as run_merge
from llmcycle.progress import say
from llmcycle.records import load_split
from llmcycle.train import reward
from llmcycle.train.reward import RewardConfig


DECISIONS = {"promote": "promoted", "reject": "rejected", "inconclusive": "inconclusive"}  # as the run report words it


class GatesStageConfig(StageConfig):
    """The run's `gates` stage: a judge trained on rated chats disjoint from the ranker's, then the gates."""

    judge: RewardConfig = Field(default_factory=lambda: RewardConfig(record_offset=1, record_stride=2))
    gates: GateConfig = Field(default_factory=GateConfig)


def held_out(data_dir: Path) -> tuple[list[list[dict]], list[dict]]:
    """(prompts, chat records) of the test split: what the gates measure on."""
    rows = load_split(data_dir, "test")
    prompts, chats = [], []
    for r in rows:
        if "prompt" in r:
            prompts.append(r["prompt"])
            good = r.get("chosen") or (r.get("completion") if r.get("label") else None)
            if good:
                chats.append({"messages": r["prompt"] + good})
        elif "messages" in r:
            chats.append(r)
            first = next((i for i, m in enumerate(r["messages"]) if m["role"] == "assistant"), None)
            if first:
                prompts.append(r["messages"][:first])
    if not prompts:
        raise DataError(f"{data_dir}/test.jsonl: no held-out prompts for the gates (too little data)")
    return prompts, chats


def reply_settings(gates: GateConfig) -> GenerationSettings:
    """How the gates' models reply: the config's decoding, seeded, so both models face the same draws."""
    return GenerationSettings(max_new_tokens=gates.max_new_tokens, temperature=gates.temperature, top_k=gates.top_k,
                              top_p=gates.top_p, repetition_penalty=gates.repetition_penalty, seed=gates.seed)


def measure(path: str, prompts: list[list[dict]], chats: list[dict], gates: GateConfig) -> dict[str, Any]:
    """One model's replies to the held-out prompts, its per-conversation perplexity statistics, and the probes'
    per-item outcomes: each adversarial prompt's reply flagged or not, each counterfactual pair's gaps."""
    engine = Engine.load(path)
    subject = Subject(Path(path).name, path, engine)
    settings = reply_settings(gates)
    replies = [c.text for c in generate(subject, prompts, settings, gates.batch_size, "gate prompts")]
    out: dict[str, Any] = {"replies": replies}
    if chats:
        scores = score_each(engine.model, engine.tokenizer, chats, gates.batch_size,
                            desc=f"{subject.name}: gate perplexity", backend=engine.backend)
        out["ppl_stats"] = np.array([[s.nll_nats, s.tokens] for s in scores], dtype=np.float64)
    # the probes compare two models on a few prompts each: decoded greedily, so a difference is the models' and
    # not the sampler's noise on a few dozen replies
    probe = GenerationSettings(max_new_tokens=gates.max_new_tokens, temperature=0, seed=gates.seed)
    prompts_shipped, pairs_shipped = load_prompts(), load_pairs()
    safety = SafetyTask(prompts_shipped[:gates.max_safety_prompts], probe, gates.batch_size).evaluate(subject)
    bias = BiasTask(pairs_shipped[:gates.max_bias_pairs], probe, gates.batch_size).evaluate(subject)
    out["safety_flags"], out["bias_gaps"] = flagged(safety.samples), pair_gaps(bias.samples)
    out["bias_groups"] = pair_groups(bias.samples)
    out["shipped"] = {"safety": len(prompts_shipped), "bias": len(pairs_shipped)}
    return out


def ppl_row(cand: dict[str, Any], cur: dict[str, Any], gates: GateConfig) -> dict[str, Any] | None:
    if "ppl_stats" not in cand:
        return None
    a, b = cur["ppl_stats"], cand["ppl_stats"]
    keep = (a[:, 1] > 0) & (b[:, 1] > 0)
    if keep.sum() < 2:
        return None
    a, b = a[keep], b[keep]
    change = relative_change(a, b, perplexity_score, seed=gates.seed)
    ppl = [float(perplexity_score(x.sum(0, keepdims=True))[0]) for x in (b, a)]
    return perplexity_gate(change, ppl[0], ppl[1], gates.max_ppl_increase)


def decide(cand: dict[str, Any], cur: dict[str, Any], wins: list[dict[str, Any]], gates: GateConfig,
           judge: dict[str, Any] | None = None, trained: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every gate's row (status pass / fail / inconclusive, with its numbers): the win rate under each judge, the
    judge's own agreement with people, the candidate's training validation, perplexity, degeneration, probes."""
    rows = [win_gate("win_rate" if i == 0 else "win_rate_second_judge", w, gates.min_win_rate)
            for i, w in enumerate(wins)]
    rows += [r for r in (judge_gate(judge, gates.judge_above_chance), validation_gate(trained), ppl_row(cand, cur, gates)) if r]
    rows += degeneration_gates(cand["replies"], cur["replies"], gates)
    return rows + probe_gates(cand, cur, gates)


def servable(model_dir: Path, work: Path) -> str:
    """A full model dir: an adapter is merged into its base, so the next round can align the served model again."""
    if not is_adapter_dir(model_dir):
        return str(model_dir)
    return str(run_merge(MergeConfig(), model_dir, work / "model"))


def manifest_metrics(path: str | Path | None, stage: str) -> dict[str, Any] | None:
    """The metrics an artifact dir's manifest records (None when it has none: a model not made by llmcycle)."""
    if path is None:
        return None
    try:
        return read_manifest(path, stage).get("metrics") or None
    except (ArtifactError, OSError):
        return None


def judge_record(judge_dir: str) -> dict[str, Any] | None:
    """A reward-model judge's held-out pairwise accuracy, from its manifest."""
    metrics = manifest_metrics(judge_dir, "reward")
    if not metrics or "val_pairwise_accuracy" not in metrics:
        return None
    return {"accuracy": metrics["val_pairwise_accuracy"], "n": metrics.get("val_pairs", 0),
            "source": f"{Path(judge_dir).name}'s validation pairs"}


def interval_metrics(gates: list[dict[str, Any]]) -> dict[str, Any]:
    """Each gate's interval as manifest metrics: `<gate>_change` and `<gate>_change_ci95` for the gates decided on
    a candidate-minus-current change (`<gate>_drop` for a relative fall against the current model's figure),
    `<gate>_ci95` beside the candidate's value for the others."""
    out: dict[str, Any] = {}
    for g in gates:
        key = next((k for k in ("change", "drop") if k in g), None)
        if key:
            out.update({f"{g['gate']}_{key}": g[key], f"{g['gate']}_{key}_ci95": g["ci95"]})
        elif "ci95" in g:
            out[f"{g['gate']}_ci95"] = g["ci95"]
    return out


def gate_candidate(gates_cfg: GateConfig, current: str, cand_dir: str, data_dir: Path, judge: str, art: Any,
                   shown_candidate: Optional[str] = None, trained: Optional[str] = None):
    """Measure both models on the held-out split, decide every gate, write gates.json, report.md, replies.json
    and the manifest metrics into `art`. `trained` is the candidate's training dir (its validation margins).
    Returns (gates, names of the gates that did not pass, win rate)."""
    judges = [load_judge(judge)] + ([load_judge(gates_cfg.second_judge)] if gates_cfg.second_judge else [])
    prompts, chats = held_out(data_dir)
    prompts, chats = prompts[:gates_cfg.max_prompts], chats[:gates_cfg.max_ppl_records]
    cand, cur = measure(cand_dir, prompts, chats, gates_cfg), measure(current, prompts, chats, gates_cfg)
    wins = [head_to_head(j, prompts, cand["replies"], cur["replies"]) for j in judges]
    gates = decide(cand, cur, wins, gates_cfg, judge_record(judge), manifest_metrics(trained, "align"))
    decision = verdict(gates)
    blocking = [g["gate"] for g in gates if g["status"] != PASS]
    atomic_write_json(art.dir / "gates.json", {"gates": gates, "verdict": decision, "decision": DECISIONS[decision],
                                               "promoted": decision == "promote",
                                               "judges": [{k: v for k, v in w.items() if k != "verdicts"}
                                                          for w in wins]})
    (art.dir / "report.md").write_text(report_md(gates, decision, shown_candidate or cand_dir, current))
    atomic_write_json(art.dir / "replies.json", [
        {"prompt": p, "candidate": a, "current": b, "verdict": v}
        for p, a, b, v in zip(prompts, cand["replies"], cur["replies"], wins[0]["verdicts"])])
    art.metrics = {"promoted": decision == "promote", "verdict": decision, "failed_gates": blocking,
                   "win_rate": wins[0]["win_rate"], "win_rate_ci95": wins[0]["ci95"], "win_rate_n": wins[0]["n"],
                   **interval_metrics(gates),
                   **{f"{g['gate']}_candidate": g["candidate"] for g in gates},
                   **{f"{g['gate']}_current": g["current"] for g in gates}}
    return gates, blocking, wins[0]["win_rate"]


def run_gates(cfg: GatesStageConfig, current: str | Path, candidate: str | Path, data_dir: str | Path,
              out: str | Path) -> Path:
    """The pipeline's `gates` stage: CURRENT vs CANDIDATE on DATA_DIR's test split -> OUT (report, verdict)."""
    inputs = {"current": str(current), "candidate": str(candidate), "data": str(data_dir)}
    with open_artifact(out, "gates", to_dict(cfg), inputs) as art:
        judge = str(reward.run(cfg.judge, data_dir, current, art.dir / "judge"))
        cand_dir = servable(Path(candidate), art.dir)
        gates, blocking, win = gate_candidate(cfg.gates, str(current), cand_dir, Path(data_dir), judge, art,
                                              str(Path(cand_dir)).replace(str(art.dir), str(out)), str(candidate))
    say(f"gates: {verdict(gates)}" + (f" ({', '.join(blocking)})" if blocking else "")
        + f"; win rate {win:.2f} under the held-out judge")
    return Path(out)
