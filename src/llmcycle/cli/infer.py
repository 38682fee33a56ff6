"""`llmcycle chat` (terminal chat with memory) and `llmcycle generate` (one prompt or a JSONL batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model dir (full, merged, adapter), hub id.")]
System = Annotated[Optional[str], typer.Option("--system", help="System message.")]
MaxTurns = Annotated[Optional[int], typer.Option("--max-turns", help="Show the model at most N earlier turns.")]
Prompt = Annotated[Optional[str], typer.Option("--prompt", "-p", help="One raw text prompt.")]
Input = Annotated[Optional[Path], typer.Option("--input", "-i", help="JSONL: chat records or {\"prompt\"}.")]
Output = Annotated[Optional[Path], typer.Option("--out", "-o", help="JSONL file: each input line + reply.")]
Prefix = Annotated[Optional[str], typer.Option("--prefix", help="Infill: the text before the middle.")]
Suffix = Annotated[Optional[str], typer.Option("--suffix", help="Infill: the text after the middle.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Prompts decoded together.")]
Knob = "Decoding"
MaxNew = Annotated[Optional[int], typer.Option("--max-new-tokens", help="Most tokens per reply.", rich_help_panel=Knob)]
MinNew = Annotated[Optional[int], typer.Option("--min-new-tokens", help="Fewest tokens per reply.", rich_help_panel=Knob)]
Temp = Annotated[Optional[float], typer.Option("--temperature", "-t", help="0 = greedy.", rich_help_panel=Knob)]
TopK = Annotated[Optional[int], typer.Option("--top-k", help="0 = off, 1 = greedy.", rich_help_panel=Knob)]
TopP = Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling, in (0, 1].", rich_help_panel=Knob)]
MinP = Annotated[Optional[float], typer.Option("--min-p", help="In [0, 1).", rich_help_panel=Knob)]
RepPen = Annotated[Optional[float], typer.Option("--repetition-penalty", help="> 1 discourages repeats.",
                                                 rich_help_panel=Knob)]
NoRep = Annotated[Optional[int], typer.Option("--no-repeat-ngram-size", help="Ban repeated n-grams of this size.",
                                              rich_help_panel=Knob)]
Beams = Annotated[Optional[int], typer.Option("--num-beams", help="Beam search width.", rich_help_panel=Knob)]
LenPen = Annotated[Optional[float], typer.Option("--length-penalty", help="Beam search length penalty.",
                                                 rich_help_panel=Knob)]
Sample = Annotated[Optional[bool], typer.Option("--sample/--greedy", help="Force sampling or greedy decoding.",
                                                rich_help_panel=Knob)]
Stop = Annotated[Optional[List[str]], typer.Option("--stop", help="Stop string (repeatable).", rich_help_panel=Knob)]
StopIds = Annotated[Optional[List[int]], typer.Option("--stop-token-id", help="Stop token id (repeatable).",
                                                      rich_help_panel=Knob)]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Sampling seed.", rich_help_panel=Knob)]
JsonSchema = Annotated[Optional[Path], typer.Option("--json-schema", help="JSON schema file: every reply is JSON "
                                                   "valid under it (grammar-constrained decoding).")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1, ...")]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="auto, fp32, bf16, fp16.")]
Quant = Annotated[Optional[str], typer.Option("--quantize", help="Weight-only quantization: bf16, int8, int4 or int4:GROUP (32|64|128).")]
Threads = Annotated[Optional[int], typer.Option("--threads", help="CPU threads.")]
Fast = Annotated[Optional[bool], typer.Option("--fast/--no-fast", help="Our fast decode path (Llama family).")]


def _config(config, sets, **flags):
    from llmcycle.config import load_config
    from llmcycle.errors import ConfigError
    from llmcycle.infer.config import ChatConfig

    from llmcycle.infer import GenerationSettings

    cfg = load_config(ChatConfig, config, sets or [], section="chat", **flags)
    if not cfg.model:
        raise ConfigError("no model: pass --model DIR (or set chat.model in the config)")
    GenerationSettings(**{"max_new_tokens": 1 << 30, **cfg.knobs()})  # bad knobs fail before the model loads
    return cfg


def _engine(cfg):
    from llmcycle.infer import Engine
    from llmcycle.infer.quantize import check_method

    check_method(cfg.quantize, cfg.device)
    try:  # a loading bar per weight file is noise before a chat
        from transformers.utils import logging

        logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    return Engine.load(cfg.model, device=cfg.device, dtype=cfg.dtype, quantize=cfg.quantize, fast=cfg.fast,
                       threads=cfg.threads)


def chat(model: ModelOpt = None, system: System = None, max_turns: MaxTurns = None, config: ConfigOpt = None,
         sets: SetOpt = None, max_new_tokens: MaxNew = None, min_new_tokens: MinNew = None,
         temperature: Temp = None, top_k: TopK = None, top_p: TopP = None, min_p: MinP = None,
         repetition_penalty: RepPen = None, no_repeat_ngram_size: NoRep = None, num_beams: Beams = None,
         length_penalty: LenPen = None, do_sample: Sample = None, stop: Stop = None, stop_token_id: StopIds = None,
         seed: Seed = None, device: Device = None, dtype: Dtype = None, quantize: Quant = None,
         threads: Threads = None, fast: Fast = None) -> None:
    """Chat with a model in the terminal (streams replies; /help lists commands). Piped stdin: one reply per line."""
    import sys

    from llmcycle.infer.chat import ChatSession, run_chat

    cfg = _config(config, sets, model=model, system=system, max_turns=max_turns, max_new_tokens=max_new_tokens,
                  min_new_tokens=min_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                  num_beams=num_beams, length_penalty=length_penalty, do_sample=do_sample, stop=stop or None,
                  stop_token_ids=stop_token_id or None, seed=seed, device=device, dtype=dtype, quantize=quantize,
                  threads=threads, fast=fast)
    engine = _engine(cfg)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    session = ChatSession(engine, cfg.settings_for(engine), system=cfg.system, max_turns=cfg.max_turns,
                          out=sys.stdout, info=sys.stdout if interactive else sys.stderr, interactive=interactive,
                          model_name=str(cfg.model))
    run_chat(session, sys.stdin)


def generate(model: ModelOpt = None, prompt: Prompt = None, input: Input = None, out: Output = None,
             prefix: Prefix = None, suffix: Suffix = None, config: ConfigOpt = None, sets: SetOpt = None,
             max_new_tokens: MaxNew = None,
             min_new_tokens: MinNew = None, temperature: Temp = None, top_k: TopK = None, top_p: TopP = None,
             min_p: MinP = None, repetition_penalty: RepPen = None, no_repeat_ngram_size: NoRep = None,
             num_beams: Beams = None, length_penalty: LenPen = None, do_sample: Sample = None, stop: Stop = None,
             stop_token_id: StopIds = None, seed: Seed = None, device: Device = None, dtype: Dtype = None,
             quantize: Quant = None, threads: Threads = None, fast: Fast = None,
             batch_size: BatchSize = None, json_schema: JsonSchema = None) -> None:
    """Generate for one --prompt (printed), one --prefix/--suffix (the middle, printed) or every line of --input
    (written to --out)."""
    from llmcycle.errors import ConfigError
    from llmcycle.infer.batch import generate_file
    from llmcycle.infer.constrain import read_schema
    from llmcycle.infer.infill import infill

    pair = None if prefix is None and suffix is None else (prefix or "", suffix or "")
    if sum(x is not None for x in (prompt, input, pair)) != 1:
        raise ConfigError("give exactly one of --prompt TEXT, --prefix/--suffix TEXT or --input FILE.jsonl")
    if input is not None and out is None:
        raise ConfigError("--input needs --out FILE.jsonl")
    cfg = _config(config, sets, model=model, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                  temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                  num_beams=num_beams, length_penalty=length_penalty, do_sample=do_sample, stop=stop or None,
                  stop_token_ids=stop_token_id or None, seed=seed, device=device, dtype=dtype, quantize=quantize,
                  threads=threads, fast=fast, batch_size=batch_size)
    if prompt is not None and not prompt.strip():
        raise ConfigError("--prompt: empty prompt")
    if input is not None:
        from llmcycle.infer.batch import read_requests

        read_requests(input)  # bad input fails before the model loads
    schema = read_schema(json_schema) if json_schema is not None else None
    engine = _engine(cfg)
    settings = cfg.settings_for(engine)
    if schema is not None:
        settings = settings.replace(grammar=engine.json_grammar(schema))
    if pair is not None:
        [completion] = infill(engine, [pair], settings)
        print(completion.text)
        return
    if prompt is not None:
        [completion] = engine.generate([prompt], settings)
        print(completion.text)
        return
    generate_file(engine, settings, input, out, cfg.batch_size)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("chat")(chat)
    app.command("generate")(generate)
