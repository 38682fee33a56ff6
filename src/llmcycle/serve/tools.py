"""Tool calls in the Hermes style that Qwen2 and SmolLM2 templates use: tools are rendered by the model's own chat
template, and the model answers `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

This module decides three things for a chat request: whether the model can take tools at all (its template must
read a `tools` variable), which grammar forces a call when `tool_choice` is "required" or names a function, and
how a finished reply is read back into OpenAI `tool_calls`. A reply that looks like a call but does not parse is
returned as plain content: a model's malformed call is its answer, not a server error.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Sequence

from llmcycle.infer.constrain import GrammarError, check_schema
from llmcycle.serve.errors import APIError

OPEN, CLOSE = "<tool_call>", "</tool_call>"
CALL = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)


@dataclass
class ParsedReply:
    content: str | None
    calls: list[dict]  # OpenAI tool_calls entries


def supports_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders a `tools` list (templates without it would silently drop the tools)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template


def check_tools(tools: Sequence[Any]) -> None:
    """Every function's parameters must be a valid JSON schema: a 400 naming the tool otherwise."""
    names = set()
    for i, tool in enumerate(tools):
        name = tool.function.name
        if name in names:
            raise APIError(400, f"tools[{i}].function.name: {name!r} is defined twice", f"tools[{i}].function.name")
        names.add(name)
        try:
            check_schema(tool.function.parameters)
        except GrammarError as exc:
            raise APIError(400, f"tools[{i}].function.parameters: {exc}", f"tools[{i}].function.parameters",
                           "invalid_schema") from None


def call_schema(tools: Sequence[Any], choice: Any) -> dict:
    """The JSON schema of one call: to the named function, or (tool_choice "required") to any of them."""
    chosen = [t for t in tools if not isinstance(choice, str) and t.function.name == choice.function.name]
    options = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters}}
               for t in (chosen or tools)]
    return options[0] if len(options) == 1 else {"anyOf": options}


def template_tools(tools: Sequence[Any]) -> list[dict]:
    """Tools as chat templates read them (OpenAI's shape: type + function with a JSON-schema `parameters`)."""
    return [{"type": "function", "function": {"name": t.function.name, "description": t.function.description or "",
                                              "parameters": t.function.parameters}} for t in tools]


def parse_reply(text: str, names: Sequence[str]) -> ParsedReply | None:
    """OpenAI tool calls read from a reply, or None when it makes no call or a call that does not parse (bad JSON,
    no name, a function that was not offered)."""
    if OPEN not in text:
        return None
    calls = []
    for body in CALL.findall(text):
        try:
            call = json.loads(body.strip())
        except ValueError:
            return None
        if not isinstance(call, dict) or call.get("name") not in names:
            return None
        arguments = call.get("arguments", call.get("parameters", {}))
        if isinstance(arguments, str):
            arguments = _loads_or(arguments)
        calls.append({"id": f"call_{secrets.token_hex(12)}", "type": "function",
                      "function": {"name": call["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}})
    content = CALL.sub("", text).strip()
    return ParsedReply(content or None, calls) if calls else None


def history_calls(tool_calls: Sequence[Any]) -> list[dict]:
    """An assistant turn's past calls as templates render them: arguments as an object, not a JSON string."""
    return [{"id": c.id, "type": "function",
             "function": {"name": c.function.name, "arguments": _loads_or(c.function.arguments)}}
            for c in tool_calls]


def _loads_or(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
