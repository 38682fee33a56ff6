"""CLI: `llmcycle reward`, `llmcycle align`, `llmcycle distill`, `llmcycle improve` (parse, build the config, call)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmcycle.cli.common import ConfigOpt, MaxStepsOpt, ResumeOpt, SetOpt, TrainDeviceOpt, train_overrides, use_device
from llmcycle.cli.finetune import quiet_loading


def reward(
    data: Path = typer.Option(..., "--data", "-d", help="Data dir: paired preference records, or chats with "
                              "meta.ratings."),
    model: str = typer.Option(..., "--model", "-m", help="Causal LM to put the scalar head on (model dir or hub id)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dir (an AutoModelForSequenceClassification dir)."),
    device: TrainDeviceOpt = None,
    resume: ResumeOpt = False,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Train a Bradley-Terry reward model; reports held-out pairwise accuracy."""
    from llmcycle.config import load_config
    from llmcycle.train.reward import RewardConfig, run

    use_device(device)
    quiet_loading()
    cfg = load_config(RewardConfig, config, train_overrides(sets, max_steps), section="reward")
    run(cfg, data, model, out, resume=resume)


def align(
    data: Path = typer.Option(..., "--data", "-d", help="Data dir of preference records (GRPO: any prompts)."),
    model: str = typer.Option(..., "--model", "-m", help="The chat model to align (a full model dir, e.g. merged/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dir (adapter dir; a model dir for --tuning full)."),
    method: Optional[str] = typer.Option(None, "--method", help="dpo | kto | orpo | grpo (default dpo)."),
    tuning: Optional[str] = typer.Option(None, "--tuning", help="lora | full (default lora)."),
    beta: Optional[float] = typer.Option(None, "--beta", help="DPO/KTO beta, ORPO lambda, GRPO KL weight."),
    reward_model: Optional[str] = typer.Option(None, "--reward-model", help="GRPO: reward model dir ('model')."),
    device: TrainDeviceOpt = None,
    resume: ResumeOpt = False,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Preference optimisation (DPO, KTO, ORPO) or online RL (GRPO) in the shared training loop."""
    from llmcycle.config import load_config
    from llmcycle.train.align import AlignConfig, run

    use_device(device)
    quiet_loading()
    overrides = train_overrides(sets, max_steps)
    if reward_model:
        overrides += [f"grpo.reward_model={reward_model}", "grpo.rewards=[length,repetition,moderation,model]"]
    cfg = load_config(AlignConfig, config, overrides, section="align", method=method, tuning=tuning, beta=beta)
    run(cfg, data, model, out, resume=resume)


def distill(
    data: Path = typer.Option(..., "--data", "-d", help="Data dir of chat records."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher model (dir or hub id)."),
    model: str = typer.Option(..., "--model", "-m", help="The student: the model dir (or hub id) to train."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dir for the student."),
    mode: Optional[str] = typer.Option(None, "--mode", help="auto | logit | sequence (default auto)."),
    device: TrainDeviceOpt = None,
    resume: ResumeOpt = False,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Distil a teacher into a student: logit KL (same vocabulary) or the teacher's replies as SFT data."""
    from llmcycle.config import load_config
    from llmcycle.train.distill import DistillConfig, run

    use_device(device)
    quiet_loading()
    cfg = load_config(DistillConfig, config, train_overrides(sets, max_steps), section="distill", mode=mode)
    run(cfg, data, teacher, model, out, resume=resume)


def improve(
    out: Path = typer.Option(..., "--out", "-o", help="Folder of attempts (each attempt-NNN/ is an artifact dir)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The served model (default: what --pointer "
                                        "names)."),
    pointer: Optional[Path] = typer.Option(None, "--pointer", help="Serve pointer file; rewritten on promotion."),
    feedback: Optional[Path] = typer.Option(None, "--feedback", help="The server's feedback DB (SQLite)."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Preference data dir instead of --feedback."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Reward model judging the win rate (default: one "
                                        "trained on the data's val split)."),
    candidate: Optional[str] = typer.Option(None, "--candidate", help="Gate this model instead of aligning one."),
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Feedback -> preference data -> align the served model -> gates -> promote or reject (exit 1)."""
    from llmcycle.config import load_config
    from llmcycle.improve import ImproveConfig, run

    quiet_loading()
    cfg = load_config(ImproveConfig, config, sets or [], section="improve")
    result = run(cfg, out, model=model, pointer=pointer, feedback=feedback, data=data, judge=judge,
                 candidate=candidate)
    print(result["attempt"])
    if not result["promoted"]:
        print(f"rejected: failed gate {', '.join(result['failed'])} (see {result['attempt'] / 'report.md'})")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("reward")(reward)
    app.command("align")(align)
    app.command("distill")(distill)
    app.command("improve")(improve)
