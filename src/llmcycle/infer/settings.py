"""Decoding knobs: one validated object shared by chat, generate, eval and serve.

Defaults come from the model's `generation_config.json` (only the values that file sets), so a model ships with
the decoding its trainer chose. As in transformers' `generate`, that file's temperature/top_p/top_k/min_p only count
when it also says `do_sample: true`; without it decoding is greedy. Setting one of those knobs yourself (a flag, a
config, `/set`) turns sampling on unless `do_sample` is set to false. Every out-of-range value is a one-line
ConfigError naming the knob.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import GenerationConfig

from llmcycle.errors import ConfigError
from llmcycle.infer.decoding import KNOBS, NULLABLE, SAMPLING_KNOBS, range_problems

@dataclass
class GenerationSettings:
    """How to decode. `temperature=0` or `top_k=1` or `do_sample=False` mean greedy."""

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    do_sample: bool | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    # a compiled constraint (infer.constrain.Grammar) every row's tokens must follow; not a knob: set by the
    # engine's grammar compiler, never from text, and left out of `to_dict`
    grammar: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.validate()

    # ---- validation -------------------------------------------------------------------------------------
    def validate(self) -> None:
        for name, (kind, _) in KNOBS.items():
            value = getattr(self, name)
            if value is None and name in NULLABLE:
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, name, value)
            if kind is int and isinstance(value, float) and value.is_integer():
                value = int(value)
                setattr(self, name, value)
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}")
        problems = self._range_problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _range_problems(self) -> list[str]:
        """Each knob against its limit (infer.decoding), then the rules that relate two knobs or check items."""
        problems = range_problems({k: getattr(self, k) for k in KNOBS if k != "min_new_tokens"})
        checks = [
            (0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be in [0, max_new_tokens]"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings"),
            (all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids), "stop_token_ids must be ids >= 0"),
        ]
        return problems + [msg for ok, msg in checks if not ok]

    # ---- derived ----------------------------------------------------------------------------------------
    @property
    def sampling(self) -> bool:
        """Whether decoding samples: never at temperature 0 or top_k 1; else do_sample; unset, only when a sampling
        knob is away from its neutral value (greedy otherwise, as `generate` is)."""
        if self.temperature == 0 or self.top_k == 1:
            return False
        if self.do_sample is not None:
            return self.do_sample
        return self.temperature != 1.0 or self.top_p < 1.0 or self.top_k > 1 or self.min_p > 0

    def replace(self, **changes: Any) -> "GenerationSettings":
        unknown = [k for k in changes if k not in KNOBS and k != "grammar"]
        if unknown:
            raise ConfigError(f"unknown decoding knob {unknown[0]!r} (knobs: {', '.join(KNOBS)})")
        return dataclasses.replace(self, **changes)

    def with_text_value(self, name: str, text: str) -> "GenerationSettings":
        """A copy with one knob set from user text, as typed after `/set` (lists: comma separated)."""
        return self.replace(**{name: parse_knob(name, text)})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "grammar"}

    # ---- defaults from a model ----------------------------------------------------------------------------
    @classmethod
    def from_generation_config(cls, gen_config: Any, **overrides: Any) -> "GenerationSettings":
        """Defaults from the values a generation config explicitly sets, then `overrides`."""
        explicit: dict[str, Any] = {}
        if gen_config is not None:
            try:
                explicit = gen_config.to_diff_dict()
            except Exception:  # an odd config object: take nothing from it
                explicit = {}
        values = {k: explicit[k] for k in KNOBS if k in explicit and explicit[k] is not None}
        if not values.get("do_sample"):  # generate ignores them then: the model decodes greedily
            values = {k: v for k, v in values.items() if k not in SAMPLING_KNOBS}
        if "stop_strings" in explicit and explicit["stop_strings"]:
            stops = explicit["stop_strings"]
            values["stop"] = [stops] if isinstance(stops, str) else list(stops)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"generation settings: {exc}") from None

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> "GenerationSettings":
        """Defaults from a loaded model's generation_config, a model dir's generation_config.json, or none."""
        if isinstance(model, (str, Path)):
            file = Path(model) / "generation_config.json"
            gen = None
            if file.is_file():
                gen = GenerationConfig.from_dict(json.loads(file.read_text(encoding="utf-8")))
            return cls.from_generation_config(gen, **overrides)
        return cls.from_generation_config(getattr(model, "generation_config", None), **overrides)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def parse_knob(name: str, text: str) -> Any:
    """Turn user text into a knob's value; ConfigError for unknown knobs and unparsable values."""
    if name not in KNOBS:
        raise ConfigError(f"unknown knob {name!r} (knobs: {', '.join(KNOBS)})")
    kind = KNOBS[name][0]
    text = text.strip()
    if name in NULLABLE and text.lower() in ("none", "null", "unset", ""):
        return None
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "yes", "on", "1")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{name}: expected {kind.__name__}, got {text!r}") from None
    items = [part for part in (text.split(",") if text else [])]
    if name == "stop_token_ids":
        try:
            return [int(part) for part in items]
        except ValueError:
            raise ConfigError(f"{name}: expected comma-separated token ids, got {text!r}") from None
    return [part.replace("\\n", "\n").replace("\\t", "\t") for part in items]  # lets users type \n
