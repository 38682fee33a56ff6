"""How a model's turns and generations end: the end-of-turn id, stop and pad ids, and generation_config.json.

- `end_of_turn_id`: the token fine-tuning trains after every assistant reply. It is read off the label mask of a
  probe conversation (the same code that masks real training data), so it is the template's own end-of-turn token:
  `<|im_end|>` for ChatML, `<|end|>` for Phi-3 (whose EOS is `<|endoftext|>`), `<|eot_id|>` for Llama-3, `</s>` for
  Mistral. Eval scores it, the engine stops on it, merge and pretrain write it into generation_config.json.
- `stop_token_ids`: every id that ends a generation: end-of-turn first, then the generation config's and the
  tokenizer's EOS. `pad_token_id`: the generation config's pad, else the tokenizer's, else the first stop id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from llmcycle.errors import ConfigError, DataError
from llmcycle.modeldir.chat import PROBE
from llmcycle.modeldir.mask import IGNORE, end_of_turn_markers, tokenize_with_mask


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _generation_config(source: Any) -> Any:
    """A GenerationConfig from a loaded model, a GenerationConfig itself, or None."""
    if source is None:
        return None
    return getattr(source, "generation_config", source if hasattr(source, "eos_token_id") else None)


def end_of_turn_id(tokenizer: Any) -> int:
    """The id fine-tuning trains after each assistant reply (the template's end-of-turn token), else the EOS id."""
    cache = getattr(tokenizer, "_llmcycle_eot", None)
    template = getattr(tokenizer, "chat_template", None)
    if cache is not None and cache[0] == template:
        return cache[1]
    found = _trained_end_of_turn(tokenizer) if template else None
    if found is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError("tokenizer has neither a chat template end-of-turn token nor an EOS token")
        found = int(tokenizer.eos_token_id)
    try:
        tokenizer._llmcycle_eot = (template, found)
    except AttributeError:  # a tokenizer that takes no new attributes: recompute next time
        pass
    return found


def _trained_end_of_turn(tokenizer: Any) -> Optional[int]:
    """The last trained token of the probe reply when it is a special (marker) token, not reply text."""
    markers = end_of_turn_markers(tokenizer)
    try:
        example = tokenize_with_mask(tokenizer, PROBE, "chat template probe", markers)
    except (DataError, ConfigError):
        return None
    trained = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE]
    marker_ids = {tokenizer.convert_tokens_to_ids(m) for m in markers}
    return int(trained[-1]) if trained and trained[-1] in marker_ids else None


def stop_token_ids(tokenizer: Any, model_or_generation_config: Any = None, extra: Iterable[int] = ()) -> list[int]:
    """Every id that ends a generation: the end-of-turn id first, then EOS ids (generation config, tokenizer)."""
    gen = _generation_config(model_or_generation_config)
    ordered = [end_of_turn_id(tokenizer), *_ids(getattr(gen, "eos_token_id", None))]
    if tokenizer.eos_token_id is not None:
        ordered.append(int(tokenizer.eos_token_id))
    ordered.extend(int(t) for t in extra)
    return list(dict.fromkeys(ordered))


def pad_token_id(tokenizer: Any, model_or_generation_config: Any = None) -> int:
    gen = _generation_config(model_or_generation_config)
    for candidate in (getattr(gen, "pad_token_id", None), tokenizer.pad_token_id):
        if candidate is not None:
            return int(_ids(candidate)[0])
    return stop_token_ids(tokenizer, gen)[0]


def write_generation_config(out: str | Path, tokenizer: Any, model: Any = None, base: Optional[str] = None,
                            extra_stop: Iterable[int] = (), pad: Optional[int] = None) -> Any:
    """generation_config.json in `out`: the base's (else the model's, else a fresh one) with every stop id as EOS."""
    from transformers import GenerationConfig  # heavy: only the writers of model dirs need it

    gen = None
    if base is not None:
        try:
            gen = GenerationConfig.from_pretrained(base)
        except Exception:  # no generation_config.json in the base: derive it
            gen = None
    if gen is None and model is not None:
        gen = GenerationConfig.from_model_config(model.config)
    gen = gen or GenerationConfig()
    eos = stop_token_ids(tokenizer, gen, extra_stop)
    gen.eos_token_id = eos[0] if len(eos) == 1 else eos
    gen.pad_token_id = pad if pad is not None else pad_token_id(tokenizer, gen)
    if gen.bos_token_id is None and tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    gen.save_pretrained(str(out))
    return gen
