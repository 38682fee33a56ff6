"""Grammar-constrained decoding through the engine: a random model's output still follows the schema, alone or
beside unconstrained rows of the same batch."""

from __future__ import annotations

import json

import jsonschema
import pytest

from llmcycle.infer import Engine, GenerationSettings
from llmcycle.infer.constrain import GrammarError

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "n", "ok"],
          "properties": {"name": {"type": "string", "maxLength": 6}, "n": {"type": "integer", "minimum": 0,
                                                                         "maximum": 99},
                         "ok": {"type": "boolean"}}}


@pytest.fixture(scope="module")
def engine(make_tiny_model):
    return Engine.load(make_tiny_model("llama"))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_schema_output_validates(engine, temperature):
    settings = GenerationSettings(max_new_tokens=80, temperature=temperature, seed=3,
                                  grammar=engine.json_grammar(SCHEMA))
    for completion in engine.generate(["hello there", "how are you doing today?", "we went up"], settings):
        jsonschema.validate(json.loads(completion.text), SCHEMA)
        assert completion.finish_reason == "eos"


def test_json_object_and_unconstrained_rows_differ(engine):
    plain = GenerationSettings(max_new_tokens=24, temperature=0)
    [free] = engine.generate(["hello there"], plain)
    [constrained] = engine.generate(["hello there"], plain.replace(grammar=engine.json_grammar()))
    assert isinstance(json.loads(constrained.text), dict)
    assert free.text != constrained.text
    assert "grammar" not in plain.replace(grammar=engine.json_grammar()).to_dict()


def test_invalid_schema_names_the_problem(engine):
    with pytest.raises(GrammarError, match="invalid JSON schema at properties/a/type"):
        engine.json_grammar({"type": "object", "properties": {"a": {"type": "nonsense"}}})
    with pytest.raises(GrammarError, match="must be an object"):
        engine.json_grammar(["not", "a", "schema"])


def test_beam_search_refuses_a_grammar(engine):
    settings = GenerationSettings(max_new_tokens=8, num_beams=2, grammar=engine.json_grammar())
    with pytest.raises(GrammarError, match="num_beams"):
        engine.generate(["hello there"], settings)


def test_generate_json_schema_flag(cli, make_tiny_model, tmp_path):
    model = make_tiny_model("llama")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    code, out, err = cli("generate", "--model", model, "--prompt", "hello there", "--max-new-tokens", "80",
                         "--temperature", "0", "--json-schema", schema)
    assert code == 0, err
    jsonschema.validate(json.loads(out), SCHEMA)
    schema.write_text('{"type": "object",\n "properties": {"a": {"type": 3}}}', encoding="utf-8")
    code, _, err = cli("generate", "--model", model, "--prompt", "hi", "--json-schema", schema)
    assert code == 2 and "schema.json: invalid JSON schema at properties/a/type" in err
    schema.write_text('{"type": "object",\n oops}', encoding="utf-8")
    code, _, err = cli("generate", "--model", model, "--prompt", "hi", "--json-schema", schema)
    assert code == 2 and "schema.json: line 2: not valid JSON" in err and "Traceback" not in err
