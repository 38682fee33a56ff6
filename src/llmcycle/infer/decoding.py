"""The one decoding block: every knob that steers sampling, its type, its help text and its limits, defined once.

`GenerationSettings` validates against these limits, every config that samples (chat, eval, on-policy pairs, GRPO,
distill) declares its knobs through `knob()` or inherits them from `Decoding`, and the server's request schema takes
its field limits from here, so a value valid in one place is valid in all: temperature 0 is greedy everywhere.

Configs inherit the knobs as flat fields (a pydantic subclass) rather than nesting a `decoding:` block: users' YAML
already says `chat: {temperature: 0.7}` and `align: {grpo: {temperature: 1.0}}`, and flat fields keep every such key
valid with no alias layer, while the limits still live only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pydantic import Field

from llmcycle.config import StageConfig


@dataclass(frozen=True)
class Limit:
    """An open or closed interval; None = unbounded on that side."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def text(self) -> str:
        """The limit as users read it: '>= 0', '> 0', 'in (0, 1]'."""
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "any value"

    def constraints(self) -> dict[str, float]:
        """The limit as pydantic Field keywords."""
        return {k: v for k, v in (("ge", self.ge), ("gt", self.gt), ("le", self.le), ("lt", self.lt)) if v is not None}


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Knob:
    kind: type
    help: str
    limit: Limit = Limit()


# the order is the order /show prints them
KNOB_SPECS: dict[str, Knob] = {
    "max_new_tokens": Knob(int, "most tokens to generate (>= 1)", Limit(ge=1)),
    "min_new_tokens": Knob(int, "fewest tokens before end-of-sequence is allowed (>= 0)", Limit(ge=0)),
    "temperature": Knob(float, "0 = greedy; higher = more random (>= 0)", Limit(ge=0)),
    "top_k": Knob(int, "sample from the k most likely tokens; 0 = off, 1 = greedy", Limit(ge=0)),
    "top_p": Knob(float, "nucleus sampling: smallest set with this total probability, in (0, 1]", Limit(gt=0, le=1)),
    "min_p": Knob(float, "drop tokens less likely than min_p x the top token's probability, in [0, 1)",
                  Limit(ge=0, lt=1)),
    "repetition_penalty": Knob(float, "> 1 makes tokens already seen less likely (> 0)", Limit(gt=0)),
    "no_repeat_ngram_size": Knob(int, "never repeat an n-gram of this size; 0 = off", Limit(ge=0)),
    "num_beams": Knob(int, "beam search width; 1 = no beam search", Limit(ge=1)),
    "length_penalty": Knob(float, "beam search: > 0 favours longer sequences"),
    "do_sample": Knob(bool, "sample (true) or decode greedily (false); unset = the model's generation_config "
                      "(greedy unless it says do_sample), sampling once you set temperature/top_p/top_k/min_p"),
    "stop": Knob(list, "strings that end a reply (the reply is cut before them)"),
    "stop_token_ids": Knob(list, "token ids that end a reply, besides the model's end-of-sequence ids"),
    "seed": Knob(int, "random seed for sampling (64-bit); unset = a fresh one each time",
                 Limit(ge=-(2 ** 63), lt=2 ** 63)),
}
KNOBS: dict[str, tuple[type, str]] = {name: (spec.kind, spec.help) for name, spec in KNOB_SPECS.items()}
NULLABLE = {"do_sample", "seed"}
SAMPLING_KNOBS = ("temperature", "top_p", "top_k", "min_p")


def knob(name: str, default: Any = None, **extra: Any) -> Any:
    """A config field for decoding knob `name` with its one set of limits (and `extra` Field keywords)."""
    spec = KNOB_SPECS[name]
    extra.setdefault("description", spec.help[0].upper() + spec.help[1:] + ".")
    return Field(default, **spec.limit.constraints(), **extra)


def range_problems(values: dict[str, Any]) -> list[str]:
    """'<knob> must be <limit>' for each value outside its knob's limit."""
    return [f"{name} must be {KNOB_SPECS[name].limit.text()}" for name, value in values.items()
            if value is not None and isinstance(value, (int, float)) and not KNOB_SPECS[name].limit.holds(value)]


class Decoding(StageConfig):
    """Every decoding knob, unset = the model's generation_config. Configs that sample inherit it."""

    max_new_tokens: Optional[int] = knob("max_new_tokens")
    min_new_tokens: Optional[int] = knob("min_new_tokens")
    temperature: Optional[float] = knob("temperature")
    top_k: Optional[int] = knob("top_k")
    top_p: Optional[float] = knob("top_p")
    min_p: Optional[float] = knob("min_p")
    repetition_penalty: Optional[float] = knob("repetition_penalty")
    no_repeat_ngram_size: Optional[int] = knob("no_repeat_ngram_size")
    num_beams: Optional[int] = knob("num_beams")
    length_penalty: Optional[float] = knob("length_penalty")
    do_sample: Optional[bool] = knob("do_sample")
    stop: Optional[list[str]] = knob("stop")
    stop_token_ids: Optional[list[int]] = knob("stop_token_ids")
    seed: Optional[int] = knob("seed")

    def knobs(self) -> dict[str, Any]:
        """The decoding knobs this config sets (the rest come from the model)."""
        return {k: getattr(self, k) for k in KNOB_SPECS if getattr(self, k, None) is not None}
