"""Model presets: the documented parameter counts are the real ones."""

from __future__ import annotations

import pytest
import torch

from llmcycle.errors import ConfigError
from llmcycle.models import PRESETS, body_params, get_preset, llama_config

DOCUMENTED_TOTAL_AT_8192 = {"tiny": 0.60e6, "default": 1.79e6, "small": 27.8e6, "medium": 81.8e6, "large": 292e6}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_the_docs(name):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(llama_config(name, 8192))
    total = sum(p.numel() for p in model.parameters())
    preset = PRESETS[name]
    assert total == body_params(preset) + 8192 * preset.hidden
    assert total == pytest.approx(DOCUMENTED_TOTAL_AT_8192[name], rel=0.01)
    assert model.config.model_type == "llama" and model.config.num_key_value_heads <= preset.heads


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match="choose from tiny, default"):
        get_preset("huge")
