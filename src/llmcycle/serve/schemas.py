"""Request bodies of the OpenAI API subset we serve, plus our feedback and reload bodies.

Unknown fields are ignored (clients send many); known fields with wrong types or out-of-range values are a 400
naming the field. Our decoding knobs (top_k, min_p, repetition_penalty, no_repeat_ngram_size) ride along as
extra fields, as vLLM's do (`extra_body` in the openai client).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmcycle.infer.decoding import knob
from llmcycle.serve.tools import history_calls

ROLES = ("system", "developer", "user", "assistant", "tool")
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class TextPart(Loose):
    type: Literal["text"]
    text: str


class FunctionCall(Loose):
    name: str
    arguments: Union[str, dict] = "{}"


class ToolCall(Loose):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class Function(Loose):
    name: str = Field(pattern=FUNCTION_NAME)
    description: Optional[str] = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(Loose):
    type: Literal["function"]
    function: Function


class NamedFunction(Loose):
    name: str


class NamedToolChoice(Loose):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(Loose):
    name: str = "response"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(Loose):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object with a schema")
        return self


class Message(Loose):
    role: str
    content: Union[str, list[TextPart], None] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        return role

    def plain(self) -> dict[str, Any]:
        """The message as the chat template wants it: a string content, developer as system, past tool calls
        with their arguments as objects."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            out["tool_calls"] = history_calls(self.tool_calls)
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class StreamOptions(Loose):
    include_usage: bool = False


class Sampling(Loose):
    """Fields both endpoints share."""

    model: str = ""
    max_tokens: Optional[int] = knob("max_new_tokens")
    temperature: Optional[float] = knob("temperature")
    top_p: Optional[float] = knob("top_p")
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = knob("seed")
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    user: Optional[str] = None
    top_k: Optional[int] = knob("top_k")
    min_p: Optional[float] = knob("min_p")
    repetition_penalty: Optional[float] = knob("repetition_penalty")
    no_repeat_ngram_size: Optional[int] = knob("no_repeat_ngram_size")
    min_tokens: Optional[int] = knob("min_new_tokens")
    response_format: Optional[ResponseFormat] = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, stop):
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    def knobs(self) -> dict:
        """Our decoding knobs this request sets (the rest come from the model's generation config)."""
        values = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed, "top_k": self.top_k,
                  "min_p": self.min_p, "repetition_penalty": self.repetition_penalty,
                  "no_repeat_ngram_size": self.no_repeat_ngram_size, "min_new_tokens": self.min_tokens}
        knobs = {k: v for k, v in values.items() if v is not None}
        if self.stop:
            knobs["stop"] = list(self.stop)
        return knobs

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None

    @model_validator(mode="after")
    def _check(self):
        if not any((m.plain()["content"] or "").strip() or m.tool_calls for m in self.messages):
            raise ValueError("messages: no message has any content")
        return self

    @property
    def tool_mode(self) -> str:
        """"off" (no tools, or tool_choice none), "auto" (the model may call), "forced" (required or named)."""
        if not self.tools or self.tool_choice == "none":
            return "off"
        return "auto" if self.tool_choice in (None, "auto") else "forced"

    @property
    def requested_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprob_count(self) -> Optional[int]:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Sampling):
    prompt: Union[str, list[str]]
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, prompt):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or any(not p.strip() for p in prompts):
            raise ValueError("prompt must be non-empty text")
        return prompts

    @property
    def requested_tokens(self) -> Optional[int]:
        return self.max_tokens

    @property
    def logprob_count(self) -> Optional[int]:
        return self.logprobs


class FeedbackRequest(Loose):
    """A rating of one reply (`response_id` + `rating`), or a pairwise choice (`chosen_id` + `rejected_id`)."""

    response_id: Optional[str] = None
    rating: Optional[Literal[1, -1]] = None
    chosen_id: Optional[str] = None
    rejected_id: Optional[str] = None
    comment: str = Field("", max_length=4000)

    @model_validator(mode="after")
    def _one_kind(self):
        rating = self.response_id is not None or self.rating is not None
        pair = self.chosen_id is not None or self.rejected_id is not None
        if rating == pair:
            raise ValueError("give either response_id + rating, or chosen_id + rejected_id")
        if rating and (self.response_id is None or self.rating is None):
            raise ValueError("a rating needs both response_id and rating (1 or -1)")
        if pair and (self.chosen_id is None or self.rejected_id is None):
            raise ValueError("a pairwise choice needs both chosen_id and rejected_id")
        return self


class ReloadRequest(Loose):
    model: Optional[str] = None
