"""`llmcycle eval`: measure a model (and any to compare with it) on a data dir's test split, the shipped
safety and bias probes, and public benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("eval")(eval_command)
    app.command("judge-check")(judge_check_command)


def eval_command(
    model: str = typer.Option(..., "--model", "-m", help="Model dir (full, merged or adapter) or hub id."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Data dir with a test split (test.jsonl); "
                                        "needed unless --tasks is given."),
    out: Path = typer.Option(..., "--out", "-o", help="Eval dir to write (metrics.json, report.md, charts)."),
    compare: Optional[List[str]] = typer.Option(None, "--compare", help="Another model to measure alongside "
                                                "(repeatable), e.g. the base model."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Benchmarks, comma separated: arc_easy, "
                                        "arc_challenge, hellaswag, piqa, boolq, mmlu, gsm8k, humaneval, xsum, "
                                        "truthfulqa, realtoxicity, crows_pairs, stereoset, bbq."),
    shots: Optional[int] = typer.Option(None, "--shots", help="Few-shot examples per benchmark question."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Questions per benchmark (the first N)."),
    variants: Optional[Path] = typer.Option(None, "--variants", help="Compare prompt variants (YAML: tasks, "
                                            "probes, variants with system/chat/instruction/shots) instead."),
    apply_to: Optional[Path] = typer.Option(None, "--apply-to", help="With --variants: write the best variant's "
                                            "system message into this run config's chat section."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="Weight-only quantization of every model "
                                           "evaluated: bf16, int8, int4 or int4:GROUP."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge the main model's replies against each --compare "
                                        "model's: a reward model dir, a local model dir or GGUF, or an "
                                        "OpenAI-compatible URL (e.g. http://127.0.0.1:8000/v1)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... (default cpu)."),
    allow_unsafe_exec: bool = typer.Option(False, "--allow-unsafe-exec", help="Run generated code (HumanEval) "
                                           "even where this machine cannot isolate it (no Linux namespaces)."),
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Perplexity, bits-per-byte, generation metrics, safety and bias probes, and benchmarks (--tasks) or prompt
    variants (--variants) -> EVAL_DIR/report.md."""
    from llmcycle.config import load_config
    from llmcycle.evaluate import EvalConfig, run
    from llmcycle.errors import ConfigError
    from llmcycle.evaluate.report import read_metrics, summary_lines

    if variants is not None:
        from llmcycle.evaluate.variants import run as run_variants

        result = run_variants(variants, model, out, apply_to, data=data)
        print((result / "report.md").read_text(encoding="utf-8"))
        return
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    cfg = load_config(EvalConfig, config, sets or [], section="eval", tasks=names, shots=shots, limit=limit,
                      quantize=quantize, device=device, allow_unsafe_exec=allow_unsafe_exec or None, judge=judge)
    if data is None and not cfg.tasks:
        raise ConfigError("--data is required unless --tasks names benchmarks to run")
    result = run(cfg, model, data, out, compare=compare or [])
    from llmcycle.evaluate.bench.report import headline

    keys = ("perplexity", "bits_per_byte", "bleu", "chrf", "eos_share", "safety_flag_rate", "bias_loglik_gap")
    for line in summary_lines(read_metrics(result), keys + tuple(headline(t) for t in cfg.tasks)):
        print(line)
    print(f"report: {result / 'report.md'}")


def judge_check_command(
    judge: str = typer.Option(..., "--judge", "-j", help="The judge: a reward model dir, a local model dir or GGUF "
                              "(LLM judge), or an OpenAI-compatible URL."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Data dir with human ratings (rated chats, "
                                        "e.g. chitchat) or preference pairs."),
    split: str = typer.Option("val", "--split", help="Its split to read (the reward stage trains on train)."),
    feedback: Optional[Path] = typer.Option(None, "--feedback", help="Feedback database (the server's "
                                            "pairwise choices) as more human pairs."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N pairs (a seeded random choice)."),
    min_rating_gap: float = typer.Option(1.0, "--min-rating-gap", help="Rated chats: pair two whose mean "
                                         "ratings differ by at least this."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result as JSON here."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pair sampling and of which side is shown first."),
) -> None:
    """How often a judge agrees with people on held-out preference pairs, with its 95% interval."""
    from llmcycle.judge_check import HumanPairsConfig, run_check

    cfg = HumanPairsConfig(data_dir=str(data) if data else None, split=split, feedback_db=str(feedback) if feedback
                           else None, limit=limit, min_rating_gap=min_rating_gap, seed=seed)
    result = run_check(judge, cfg, out)
    lo, hi = result["ci95"]
    print(f"{result['judge']}: agrees with people on {result['agreement']:.3f} of {result['n']} pairs "
          f"(95% interval {lo:.3f}-{hi:.3f}; {result['ties']} ties; chance is 0.5; sign test p "
          f"{result['sign_test_p']:.3g})")
