"""What a chat request's `response_format`, `tools` and `tool_choice` ask of decoding, checked before any work.

`plan` returns the grammar the reply must follow (a JSON schema, any JSON object, or a forced tool call), the
tools the chat template should render, and the names a reply's calls are parsed against. Every problem is an
OpenAI-shaped 400 naming the field; the grammar itself is compiled here (off the event loop, like tokenizing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmcycle.infer.constrain import Grammar, GrammarError
from llmcycle.serve.errors import APIError
from llmcycle.serve.tools import CLOSE, OPEN, call_schema, check_tools, supports_tools, template_tools


@dataclass
class Plan:
    grammar: Grammar | None = None
    tools: list[dict] = field(default_factory=list)  # for the chat template
    tool_names: list[str] = field(default_factory=list)  # replies are parsed for calls to these


def plan(request: Any, engine: Any) -> Plan:
    out = Plan()
    mode = _tool_mode(request) if hasattr(request, "tools") else "off"  # text completions take no tools
    if mode != "off":
        if not supports_tools(engine.tokenizer):
            raise APIError(400, "this model's chat template has no tool support: send the request without tools",
                           "tools", "tools_unsupported")
        check_tools(request.tools)
        out.tools = template_tools(request.tools)
        out.tool_names = [t.function.name for t in request.tools]
    fmt = request.response_format
    if mode == "forced":
        if fmt is not None and fmt.type != "text":
            raise APIError(400, "response_format cannot be combined with a required or named tool_choice",
                           "response_format")
        out.grammar = _compile(lambda: engine.grammars.wrapped_json(call_schema(request.tools, request.tool_choice),
                                                                    OPEN, CLOSE), "tools")
    elif fmt is not None and fmt.type == "json_object":
        out.grammar = _compile(lambda: engine.json_grammar(None), "response_format")
    elif fmt is not None and fmt.type == "json_schema":
        out.grammar = _compile(lambda: engine.json_grammar(fmt.json_schema.schema_),
                               "response_format.json_schema.schema")
    return out


def _tool_mode(request: Any) -> str:
    choice = request.tool_choice
    if choice not in (None, "none", "auto") and not request.tools:
        raise APIError(400, "tool_choice: needs tools to choose from", "tool_choice")
    if not isinstance(choice, (str, type(None))):
        names = [t.function.name for t in request.tools]
        if choice.function.name not in names:
            raise APIError(400, f"tool_choice: names {choice.function.name!r}, which is not one of the tools "
                                f"({', '.join(names)})", "tool_choice", "unknown_tool")
    return request.tool_mode


def _compile(build: Any, param: str) -> Grammar:
    try:
        return build()
    except GrammarError as exc:
        raise APIError(400, f"{param}: {exc}", param, "invalid_schema") from None
