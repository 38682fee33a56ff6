"""Unknown config keys are answered with close matches and where the keys are listed; `llmcycle config show`
prints every key of a stage."""

from __future__ import annotations

import pytest

from llmcycle.config import load_config, walk_keys
from llmcycle.errors import ConfigError
from llmcycle.pipeline import RunConfig
from llmcycle.train.finetune import FinetuneConfig


@pytest.mark.parametrize("override, suggestion", [
    ("lora.rr=8", "did you mean lora.r?"),
    ("train.max_stepz=3", "did you mean train.max_steps"),
    ("target_modules=auto", "lora.target_modules"),  # the right key in another section
])
def test_unknown_key_suggests_close_matches(override, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(FinetuneConfig, None, [override], section="finetune")
    text = str(err.value)
    assert suggestion in text and "llmcycle config show finetune" in text and "\n" not in text


def test_unknown_key_in_a_run_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("finetune:\n  lora:\n    alpah: 4\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, path)
    assert "finetune.lora.alpah: unknown key (did you mean finetune.lora.alpha?)" in str(err.value)
    assert "llmcycle config show run" in str(err.value)


def test_config_show_prints_every_key_with_its_run_default(cli):
    code, out, _ = cli("config", "show", "reward")
    keys = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and keys == [k for k, _, _ in walk_keys(RunConfig().reward)]
    assert any(line.startswith("record_stride") and "= 2" in line for line in out.splitlines())  # the run's default
    code, out, _ = cli("config", "show", "serve")
    assert code == 0 and "port" in out.split()
    code, _, err = cli("config", "show", "nope")
    assert code == 2 and "finetune" in err
