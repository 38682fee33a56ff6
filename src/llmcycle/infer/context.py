"""The one context policy: how long a model's context is, whether a prompt fits it, and what is cut when it does not.

Every place that fits text to a context asks here, so one request is checked once, with one message, and a rule
that must differ between uses is a named option, not a copy:

- `model_context`: the positions the model was built for (`modeldir.context_length`), else the tokenizer's
  `model_max_length`, else 2048.
- `fit_prompt`: a prompt must leave at least one position; `max_new_tokens` is shortened to what is left.
- `trim_history`: the oldest turns go first (whole turns, so the kept part starts with a user message); the system
  message and the last message stay.
- `trim_tokens`: a token row over its limit loses tokens at its start (`keep="end"`) or its end (`keep="start"`);
  `keep_first` keeps token 0 (a bos token) and `protect_from` stops a start cut before that position.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Sequence, TypeVar

from llmcycle.errors import DataError
from llmcycle.modeldir import context_length

DEFAULT_CONTEXT = 2048
TOKENIZER_LIMIT_CAP = 1_000_000  # tokenizers without a limit report a huge placeholder

Keep = Literal["start", "end"]
T = TypeVar("T")


def model_context(model: Any, tokenizer: Any = None) -> int:
    """The model's context length: its config's position count, else the tokenizer's limit, else 2048."""
    limit = getattr(tokenizer, "model_max_length", None)
    fallback = int(limit) if isinstance(limit, int) and 0 < limit < TOKENIZER_LIMIT_CAP else DEFAULT_CONTEXT
    return context_length(getattr(model, "config", None), fallback)


def fit_prompt(prompts: Sequence[Sequence[int]], settings: Any, context: int, owner: str = "model") -> Any:
    """`settings` with max_new_tokens (and min_new_tokens) shortened to the room the longest of `prompts` leaves in
    `context`; DataError when a prompt is empty or leaves no room. `owner` names whose context it is."""
    if any(len(p) == 0 for p in prompts):
        raise DataError("empty prompt: it encodes to no tokens")
    longest = max(len(p) for p in prompts)
    if longest >= context:
        raise DataError(f"prompt is {longest} tokens, the {owner}'s context is {context}: shorten it")
    room = context - longest
    if settings.max_new_tokens <= room:
        return settings
    return settings.replace(max_new_tokens=room, min_new_tokens=min(settings.min_new_tokens, room))


def prompt_budget(context: int, max_new_tokens: int) -> int:
    """Prompt tokens that leave room for a reply of `max_new_tokens` in `context` (at least one)."""
    return max(1, context - max_new_tokens)


def trim_history(messages: list[dict[str, str]], count_tokens: Callable[[list[dict[str, str]]], int], budget: int,
                 strict: bool = True) -> list[dict[str, str]]:
    """The system message (if first), then the newest whole turns, then the last message, in `budget` tokens.

    Turns are dropped oldest first; the fewest drops that fit are found by bisection over exact token counts
    (`count_tokens` renders a candidate). When even the system message and the last message do not fit: DataError
    if `strict`, else those are returned for the caller to refuse or cut.
    """
    if count_tokens(messages) <= budget:
        return messages
    head = 1 if messages and messages[0]["role"] == "system" else 0
    last = len(messages) - 1
    # where a kept part may start: a later user message (whole turns go), or the last message alone
    starts = [i for i in range(head + 1, last) if messages[i]["role"] == "user"] + [max(last, head)]
    low, high = 0, len(starts) - 1
    if count_tokens(messages[:head] + messages[starts[high]:]) > budget:
        if strict:
            raise DataError(f"message too long: with the system message it needs more than the {budget} tokens the "
                            "context leaves (shorten it or lower max_new_tokens)")
        return messages[:head] + messages[starts[high]:]
    while low < high:
        middle = (low + high) // 2
        if count_tokens(messages[:head] + messages[starts[middle]:]) <= budget:
            high = middle
        else:
            low = middle + 1
    return messages[:head] + messages[starts[low]:]


def trim_tokens(row: Sequence[T], max_len: int, keep: Keep = "end", keep_first: bool = False,
                protect_from: int | None = None) -> list[T]:
    """`row` cut to `max_len` items. keep="end" cuts its start (after token 0 when `keep_first`, and not past
    `protect_from`), then its end if it is still too long; keep="start" cuts its end only."""
    row = list(row)
    excess = len(row) - max_len
    if excess <= 0:
        return row
    if keep == "end":
        first = 1 if keep_first else 0
        limit = len(row) if protect_from is None else max(protect_from - first, 0)
        cut = min(excess, limit)
        row = row[:first] + row[first + cut:]
    return row[:max_len]
