"""The decoding block: one set of knobs and limits, and every place that takes knobs agrees with it."""

import inspect

import pytest
from pydantic import ValidationError

from llmcycle.cli import infer as cli_infer
from llmcycle.errors import ConfigError
from llmcycle.evaluate.stage import EvalConfig
from llmcycle.infer.config import ChatConfig
from llmcycle.infer.decoding import KNOB_SPECS, Limit
from llmcycle.infer.settings import GenerationSettings
from llmcycle.serve.schemas import ChatRequest, CompletionRequest, Sampling
from llmcycle.train.align import GRPOOptions
from llmcycle.train.distill import DistillConfig
from llmcycle.train.onpolicy import OnPolicyConfig

CLI_NAMES = {"stop_token_ids": "stop_token_id"}  # a repeatable flag takes one id each time
SERVER_NAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}  # the OpenAI names
# not in the OpenAI request: the scheduler decodes one sequence per row (no beams), clients choose sampling by
# temperature, and token ids differ between served models
SERVER_OMITS = {"num_beams", "length_penalty", "do_sample", "stop_token_ids"}
NOT_DECODING = {(DistillConfig, "temperature")}  # the softmax temperature of the distillation loss


def field_limits(model: type, name: str) -> dict[str, float]:
    limits: dict[str, float] = {}
    for meta in model.model_fields[name].metadata:
        for key in ("ge", "gt", "le", "lt"):
            if getattr(meta, key, None) is not None:
                limits[key] = getattr(meta, key)
    return limits


@pytest.mark.parametrize("command", [cli_infer.chat, cli_infer.generate])
def test_every_knob_has_a_cli_flag(command):
    params = inspect.signature(command).parameters
    missing = [k for k in KNOB_SPECS if CLI_NAMES.get(k, k) not in params]
    assert not missing, f"{command.__name__} lacks flags for {missing}"


def test_every_served_knob_has_the_same_limits_in_the_request_schema():
    for name, spec in KNOB_SPECS.items():
        if name in SERVER_OMITS:
            continue
        field = SERVER_NAMES.get(name, name)
        assert field in Sampling.model_fields, f"the request schema lacks {field}"
        assert field_limits(Sampling, field) == spec.limit.constraints(), field
    assert issubclass(ChatRequest, Sampling) and issubclass(CompletionRequest, Sampling)


@pytest.mark.parametrize("config", [ChatConfig, EvalConfig, OnPolicyConfig, GRPOOptions, DistillConfig])
def test_every_config_that_samples_uses_the_one_set_of_limits(config):
    knobs = [k for k in KNOB_SPECS if k in config.model_fields and (config, k) not in NOT_DECODING]
    assert "max_new_tokens" in knobs
    for name in knobs:
        assert field_limits(config, name) == KNOB_SPECS[name].limit.constraints(), (config.__name__, name)


def test_temperature_zero_is_greedy_everywhere():
    for config in (ChatConfig, EvalConfig, OnPolicyConfig, GRPOOptions):
        assert config(temperature=0).temperature == 0
    assert not GenerationSettings(temperature=0, do_sample=True).sampling
    with pytest.raises(ValidationError):
        GRPOOptions(temperature=-0.1)
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        GenerationSettings(temperature=-0.1)


def test_limit_text_reads_as_users_write_it():
    assert Limit(ge=0).text() == ">= 0" and Limit(gt=0).text() == "> 0"
    assert Limit(gt=0, le=1).text() == "in (0, 1]" and Limit(ge=0, lt=1).text() == "in [0, 1)"
    assert Limit(ge=0.5).holds(0.5) and not Limit(gt=0, le=1).holds(0)
