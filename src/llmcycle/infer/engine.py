"""The one inference engine behind chat, generate, eval and serve: what we evaluate is what we serve.

It works on token ids (`generate_ids`) and adds text on top: raw prompts, chat conversations through the model's
chat template, streaming, and log-likelihood scoring. Llama-family models decode through our own fast forward
(`fast_llama.py`); everything else through the model's transformers forward; beam search through `generate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from transformers import AutoConfig

from llmcycle import modeldir
from llmcycle.errors import DataError
from llmcycle.infer.beam import beam_search
from llmcycle.infer.constrain import Compiler, Grammar, refuse_beams
from llmcycle.infer.context import fit_prompt, model_context
from llmcycle.infer.decode import Completion, DecodeRun, HFBackend, Row, streamable_length
from llmcycle.infer.fast_llama import FastLlama
from llmcycle.infer.gemm import use_onednn
from llmcycle.infer.lengths import length_groups
from llmcycle.infer.quantize import check_method, check_shapes, config_widths, quantize_model
from llmcycle.infer.scoring import masked_nll, score_texts, score_token_ids
from llmcycle.infer.settings import GenerationSettings
from llmcycle.infer.threads import apply_threads
from llmcycle.loading import check_exists, load_model, load_tokenizer_for

DEFAULT_BATCH_SIZE = 8
PADDING_SLACK = 1.5  # padded prompt tokens per real one a generation batch may hold
ALONE_FROM = 2048  # prompt tokens from which a prompt is prefilled on its own by a masked-grid backend


def generation_batches(lengths: Sequence[int], batch_size: int, alone_from: int | None = ALONE_FROM
                       ) -> list[list[int]]:
    """Prompt indices in batches of at most `batch_size`, cut where padding would pass half the real tokens (the
    decode steps of a batch attend over its longest row), and a prompt of `alone_from` tokens or more alone: the
    transformers backend prefills a padded batch through an explicit [rows, 1, L, L] mask, which at thousands of
    tokens costs far more than the causal kernel a lone prompt gets (two chitchat conversations of 3,042 and 5,351
    tokens took minutes). Our Llama backend prefills each row causally on its own (`row_prefill`): None there."""
    out: list[list[int]] = []
    for group in length_groups(lengths, PADDING_SLACK, min_rows=1, max_rows=batch_size):
        long = alone_from is not None and len(group) > 1 and max(lengths[i] for i in group) >= alone_from
        out.extend([[i] for i in group] if long else [group])
    return out


def _check_quant_shapes(model: str | Path, spec: Any) -> None:
    """An int4 group size that does not divide the model's layers is refused from its config, before loading."""
    if spec is None or spec.group is None or not (Path(model) / "config.json").is_file():
        return
    check_shapes(spec, config_widths(AutoConfig.from_pretrained(model)))


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


class Engine:
    """A loaded model + tokenizer that decodes with `GenerationSettings`."""

    def __init__(self, model: Any, tokenizer: Any, fast: bool = True, quantize: str | None = None):
        """Wrap a model you hold; the process's torch threads are left as they are (see `load`)."""

        self.model = model.eval()
        modeldir.prepare_template(tokenizer, getattr(getattr(model, "config", None), "name_or_path", "") or "model")
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.threads = torch.get_num_threads()
        self.params = sum(p.numel() for p in model.parameters())
        self.eos_token_ids = modeldir.stop_token_ids(tokenizer, model)
        self.pad_token_id = modeldir.pad_token_id(tokenizer, model)
        self.context_length = model_context(model, tokenizer)
        self.turn_start_ids = self._turn_start_ids()
        self.backend = self._fast_backend() if fast else None
        self.backend_name = "fast" if self.backend is not None else "transformers"
        self.quantize = quantize
        if quantize:
            self.model = quantize_model(self.model, quantize, str(self.device))  # checks before any work
            if self.backend is not None:
                self.backend.quantize(quantize)
        if self.backend is None:
            self.backend = HFBackend(self.model)
        self._compiler: Compiler | None = None

    # ---- construction -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | Path, device: str = "cpu", dtype: str = "auto", quantize: str | None = None,
             fast: bool = True, threads: int | None = None) -> "Engine":
        """Load a full model dir, a PEFT adapter dir (merged onto its base), a merged dir or a hub id.

        Loading is the entry point of a process that decodes (chat, generate, serve, eval), so it also sets torch's
        CPU threads for this model (`infer.threads`: an explicit count, else $LLMCYCLE_THREADS, else 1 for a small
        model on CPU); an Engine built around a model you hold (training's sampling) leaves them alone."""
        spec = check_method(quantize, device)
        check_exists(model)
        _check_quant_shapes(model, spec)
        tokenizer = load_tokenizer_for(model)
        hf_model = load_model(model, dtype="fp32" if quantize else dtype, device=device, merge=True)
        if not quantize:
            use_onednn(hf_model)  # the engine owns this model: its float32 products may use the faster kernel
        engine = cls(hf_model, tokenizer, fast=fast, quantize=quantize)
        engine.threads = apply_threads(threads, engine.params, str(engine.device))
        return engine

    def _turn_start_ids(self) -> list[int]:
        """Chat-template tokens that open a turn: a model that starts a new turn has finished its reply."""
        vocab = self.tokenizer.get_vocab()
        return [vocab[t] for t in ("<|im_start|>",) if t in vocab and vocab[t] not in self.eos_token_ids]

    def chat_settings(self, settings: GenerationSettings | None) -> GenerationSettings:
        """`settings` (or the model's defaults) that also stop where the model opens a new turn."""
        settings = settings or self.default_settings
        extra = [t for t in self.turn_start_ids if t not in settings.stop_token_ids]
        return settings.replace(stop_token_ids=settings.stop_token_ids + extra) if extra else settings

    def _fast_backend(self) -> Any:
        return FastLlama.from_hf(self.model)

    @property
    def default_settings(self) -> GenerationSettings:
        """Decoding defaults from the model's generation_config.json."""
        return GenerationSettings.from_model(self.model)

    # ---- encoding ---------------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError("empty prompt: give some text to continue")
        return list(self.tokenizer(prompt)["input_ids"])

    def chat_text(self, messages: Sequence[dict], tools: Sequence[dict] | None = None) -> str:
        """The chat template applied with the generation prompt for the assistant's next turn (and the `tools`
        the model may call, rendered by the template)."""
        if not messages or not any(str(m.get("content") or "").strip() for m in messages):
            raise DataError("empty conversation: give at least one message with content")
        extra = {"tools": list(tools)} if tools else {}
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False,
                                                  **extra)

    def encode_chat(self, messages: Sequence[dict], tools: Sequence[dict] | None = None) -> list[int]:
        return list(self.tokenizer(self.chat_text(messages, tools), add_special_tokens=False)["input_ids"])

    # ---- constraints ------------------------------------------------------------------------------------
    @property
    def grammars(self) -> Compiler:
        """This model's grammar compiler (built on first use: most decoding is unconstrained)."""
        if self._compiler is None:
            vocab = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer))
            self._compiler = Compiler(self.tokenizer, max(vocab, len(self.tokenizer)), self.eos_token_ids)
        return self._compiler

    def json_grammar(self, schema: dict | None = None) -> Grammar:
        """A grammar for JSON valid under `schema` (any JSON object when None), for `settings.replace(grammar=)`.
        GrammarError (a UserError) names what is wrong with the schema."""
        return self.grammars.json_schema(schema)

    # ---- generation -------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], settings: GenerationSettings | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> list[Completion]:
        """Continue raw text prompts."""
        return self.generate_ids([self.encode_prompt(p) for p in prompts], settings, batch_size)

    def chat(self, conversations: Sequence[Sequence[dict]], settings: GenerationSettings | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, seeds: Sequence[int] | None = None) -> list[Completion]:
        """The assistant's next turn for each conversation (it also ends where the model opens a new turn)."""
        return self.generate_ids([self.encode_chat(c) for c in conversations], self.chat_settings(settings), batch_size,
                                 seeds)

    def generate_ids(self, prompts: Sequence[Sequence[int]], settings: GenerationSettings | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, seeds: Sequence[int] | None = None) -> list[Completion]:
        """Batches of similar length (left padded; see `generation_batches`); results in the input order.
        `seeds` (one per prompt) gives each sampled row its own generator: the same seed, the same draws."""
        settings = settings or self.default_settings
        results: list[Completion | None] = [None] * len(prompts)
        alone_from = None if isinstance(self.backend, FastLlama) else ALONE_FROM
        for chunk in generation_batches([len(p) for p in prompts], batch_size, alone_from):
            chunk_seeds = None if seeds is None else [seeds[i] for i in chunk]
            for index, completion in zip(chunk, self._generate_batch([prompts[i] for i in chunk], settings,
                                                                     chunk_seeds)):
                results[index] = completion
        return results  # type: ignore[return-value]

    def fit(self, prompts: Sequence[Sequence[int]], settings: GenerationSettings, context: int | None = None,
            owner: str = "model") -> GenerationSettings:
        """`settings` fitted to what the longest prompt leaves of `context` (the model's by default): the
        one prompt check of chat, generate, eval and serve (see infer.context)."""
        refuse_beams(settings)
        return fit_prompt(prompts, settings, context or self.context_length, owner)

    def _generate_batch(self, prompts: Sequence[Sequence[int]], settings: GenerationSettings,
                        seeds: Sequence[int] | None = None) -> list[Completion]:
        settings = self.fit(prompts, settings)
        if settings.num_beams > 1:
            return beam_search(self, prompts, settings)
        run = self.decode_run(prompts, settings, seeds)
        return [self._completion(run, row) for row in run.run()]

    def decode_run(self, prompts: Sequence[Sequence[int]], settings: GenerationSettings,
                   seeds: Sequence[int] | None = None) -> DecodeRun:
        """A decoding of `prompts` to step through (the scheduler's and streaming's unit of work)."""
        return DecodeRun(self.backend, self.tokenizer, prompts, settings, self.eos_token_ids, self.pad_token_id,
                         self.device, seeds)

    @staticmethod
    def _completion(run: DecodeRun, row: Row) -> Completion:
        return Completion(run.text_of(row), list(row.new_ids), row.finish_reason or "length", len(row.prompt_ids))

    # ---- streaming --------------------------------------------------------------------------------------
    def stream_chat(self, messages: Sequence[dict], settings: GenerationSettings | None = None) -> Iterator[str]:
        return _texts(self.events_chat(messages, settings))

    def stream(self, prompt: str, settings: GenerationSettings | None = None) -> Iterator[str]:
        return _texts(self.events_ids(self.encode_prompt(prompt), settings))

    def stream_ids(self, prompt_ids: Sequence[int], settings: GenerationSettings | None = None) -> Iterator[str]:
        """Text pieces as they decode; joined, they equal the Completion's text."""
        return _texts(self.events_ids(prompt_ids, settings))

    def events_chat(self, messages: Sequence[dict], settings: GenerationSettings | None = None
                    ) -> Iterator["str | Completion"]:
        return self.events_ids(self.encode_chat(messages), self.chat_settings(settings))

    def events_ids(self, prompt_ids: Sequence[int], settings: GenerationSettings | None = None
                   ) -> Iterator["str | Completion"]:
        """One generation's events: text pieces as they decode, then its Completion (joined, the pieces equal
        its text). Each call owns its state, so nothing of a generation is left on the engine."""
        settings = self.fit([prompt_ids], settings or self.default_settings)
        if settings.num_beams > 1:
            completion = self._generate_batch([prompt_ids], settings)[0]
            if completion.text:
                yield completion.text
            yield completion
            return
        run = self.decode_run([prompt_ids], settings)
        row, emitted = run.rows[0], 0
        for _ in run.steps():
            text = run.text_of(row)
            safe = len(text) if row.finish_reason else streamable_length(text, settings.stop)
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        completion = self._completion(run, row)
        if len(completion.text) > emitted:
            yield completion.text[emitted:]
        yield completion

    # ---- scoring ----------------------------------------------------------------------------------------
    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE) -> list[float]:
        """Sum of log-probabilities (natural log) of each text's tokens, given its context (or the start of a
        document: the bos token) -- for perplexity and multiple-choice likelihoods."""
        return score_texts(self, texts, contexts, batch_size)

    def score_ids(self, contexts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                  batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[float]]:
        """Per-token log-probabilities of each target id sequence following its context ids."""
        return score_token_ids(self, contexts, targets, batch_size)


    def masked_nll(self, rows: Sequence[tuple[Sequence[int], Sequence[bool]]]) -> tuple[list[float], list[int]]:
        """Summed NLL (nats) of the marked tokens of each row and how many were marked, in one forward pass."""
        return masked_nll(self.model, rows, self.pad_token_id, self.backend)

def _texts(events: Iterator["str | Completion"]) -> Iterator[str]:
    return (event for event in events if isinstance(event, str))
