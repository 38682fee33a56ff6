"""Structured outputs and tool calls through the live server with the official openai client: replies follow the
schema even from random weights, a forced tool call round-trips, and bad requests are 400s naming the field."""

from __future__ import annotations

import json
import shutil

import jsonschema
import openai
import pytest

from tests.serve.conftest import start_server

HELLO = [{"role": "user", "content": "hello there, how are you doing today?"}]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "n", "ok", "tag"],
          "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
                         "n": {"type": "integer", "minimum": 0, "maximum": 99}, "ok": {"type": "boolean"},
                         "tag": {"type": "string", "maxLength": 3}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                   "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
# A ChatML template that renders tools, past calls and tool results in the Hermes style.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nYou may call these functions, one per <tool_call>{\"name\": ..., "
    "\"arguments\": {...}}</tool_call>:\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "</tools><|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message['content'] }}\n"
    "</tool_response><|im_end|>\n"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}<|im_start|>assistant\n"
    "{{ message['content'] or '' }}{% for call in message['tool_calls'] %}<tool_call>{\"name\": "
    "\"{{ call['function']['name'] }}\", \"arguments\": {{ call['function']['arguments'] | tojson }}}"
    "</tool_call>{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tool_server(make_tiny_model, tmp_path_factory):
    """A tiny random Qwen2 whose chat template takes tools."""
    from llmcycle.serve.config import ServeConfig

    model = tmp_path_factory.mktemp("tools") / "qwen2"
    shutil.copytree(make_tiny_model("qwen2", max_position_embeddings=1024), model)
    (model / "chat_template.jinja").write_text(TOOL_TEMPLATE, encoding="utf-8")
    live = start_server(ServeConfig(model=str(model), max_context=1024, max_tokens=200,
                                    feedback_db=str(model.parent / "fb.db")))  # not ./feedback.db
    yield live
    live.stop()


def bad(call, param: str):
    with pytest.raises(openai.BadRequestError) as err:
        call()
    assert err.value.status_code == 400
    assert err.value.body["param"] == param, err.value.body
    return err.value.body["message"]


def test_json_schema_output_validates(live_server):
    client = live_server.client()
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    for temperature, seed in [(0, None), (1.0, 1), (1.0, 2)]:
        reply = client.chat.completions.create(model="", messages=HELLO, max_tokens=64, temperature=temperature,
                                               seed=seed, response_format=fmt)
        jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)
        assert reply.choices[0].finish_reason == "stop"


def test_json_object_streams_json(live_server):
    client = live_server.client()
    chunks = client.chat.completions.create(model="", messages=HELLO, max_tokens=64, temperature=0, stream=True,
                                            response_format={"type": "json_object"})
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert isinstance(json.loads(text), dict)
    plain = client.chat.completions.create(model="", messages=HELLO, max_tokens=16, temperature=0)
    assert plain.choices[0].message.content != text  # the same server, unconstrained, says something else


def test_bad_structured_requests_are_400s(live_server):
    client = live_server.client()

    def chat(**kw):
        return lambda: client.chat.completions.create(model="", messages=HELLO, max_tokens=8, **kw)

    broken = {"type": "object", "properties": {"a": {"type": "nonsense"}}}
    message = bad(chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": broken}}),
                  "response_format.json_schema.schema")
    assert "properties/a/type" in message
    bad(chat(response_format={"type": "json_schema"}), "response_format")
    bad(chat(response_format={"type": "yaml"}), "response_format.type")
    message = bad(chat(tools=[WEATHER]), "tools")  # the tiny llama's template has no tools
    assert "no tool support" in message
    bad(chat(tool_choice="required"), "tool_choice")
    reply = client.chat.completions.create(model="", messages=HELLO, max_tokens=4)
    assert reply.choices[0].message.content is not None  # still serving


def test_tool_call_round_trip(tool_server):
    client = tool_server.client()
    ask = [{"role": "user", "content": "what is the weather in paris?"}]
    named = {"type": "function", "function": {"name": "get_weather"}}
    first = client.chat.completions.create(model="", messages=ask, tools=[WEATHER, TIME], tool_choice=named,
                                           max_tokens=120, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    history = ask + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                         "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    answer = client.chat.completions.create(model="", messages=history, tools=[WEATHER, TIME], max_tokens=12,
                                            temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length")  # a random model answers in text
    assert answer.choices[0].message.tool_calls is None and answer.choices[0].message.content
    engine = tool_server.state.host.current.engine
    prompt = engine.chat_text([m if m["role"] != "assistant" else {**m, "content": ""} for m in history])
    assert '<tool_call>{"name": "get_weather"' in prompt and "sunny, 21 C" in prompt
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens


def test_tool_call_streams_and_required(tool_server):
    client = tool_server.client()
    ask = [{"role": "user", "content": "what time is it?"}]
    chunks = list(client.chat.completions.create(model="", messages=ask, tools=[WEATHER, TIME],
                                                 tool_choice="required", max_tokens=120, temperature=0,
                                                 stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"] and len(calls) == 1
    assert calls[0].function.name in ("get_weather", "get_time") and calls[0].index == 0
    json.loads(calls[0].function.arguments)


def test_bad_tool_requests_are_400s(tool_server):
    client = tool_server.client()

    def chat(**kw):
        return lambda: client.chat.completions.create(model="", messages=HELLO, max_tokens=8, **kw)

    message = bad(chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}),
                  "tool_choice")
    assert "nope" in message
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": 12}}}
    bad(chat(tools=[WEATHER, broken]), "tools[1].function.parameters")
    bad(chat(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools.0.function.name")
    bad(chat(tools=[WEATHER], tool_choice="required", response_format={"type": "json_object"}), "response_format")
    auto = client.chat.completions.create(model="", messages=HELLO, tools=[WEATHER], max_tokens=8, temperature=0)
    assert auto.choices[0].message.tool_calls is None  # no call made: plain content


def test_unparsable_calls_stay_content():
    from llmcycle.serve.tools import parse_reply

    assert parse_reply('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>', ["f"]).calls
    for text in ["<tool_call>{not json}</tool_call>", '<tool_call>{"name": "g"}</tool_call>', "no call here",
                 '<tool_call>["f"]</tool_call>']:
        assert parse_reply(text, ["f"]) is None
    parsed = parse_reply('thinking <tool_call>{"name": "f", "arguments": "{\\"x\\": 2}"}', ["f"])
    assert parsed.content == "thinking" and json.loads(parsed.calls[0]["function"]["arguments"]) == {"x": 2}


def test_constrained_and_plain_rows_share_the_batch(live_server):
    """Concurrent requests, half under a schema: each constrained reply validates and each plain reply is exactly
    what the engine decodes alone (no mask leaks into a neighbouring row)."""
    from concurrent.futures import ThreadPoolExecutor

    from llmcycle.infer import GenerationSettings

    client = live_server.client()
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}

    def ask(i: int):
        extra = {"response_format": fmt} if i % 2 else {}
        return client.chat.completions.create(model="", messages=HELLO, max_tokens=48, temperature=0, **extra)

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(ask, range(6)))
    engine = live_server.state.host.current.engine
    [alone] = engine.chat([HELLO], GenerationSettings(max_new_tokens=48, temperature=0))
    for i, reply in enumerate(replies):
        text = reply.choices[0].message.content
        if i % 2:
            jsonschema.validate(json.loads(text), SCHEMA)
        else:
            assert text == alone.text


def test_text_completions_and_n_follow_the_schema(live_server):
    client = live_server.client()
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    text = client.completions.create(model="", prompt="hello there", max_tokens=64, temperature=0,
                                     extra_body={"response_format": fmt})
    jsonschema.validate(json.loads(text.choices[0].text), SCHEMA)
    chat = client.chat.completions.create(model="", messages=HELLO, max_tokens=64, temperature=1.0, seed=5, n=3,
                                          response_format=fmt)
    for choice in chat.choices:  # every choice, not only the first, decodes under the grammar
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)
