"""The one place that decides how a model's turns and generations end, and what its chat template can do.

- `end_of_turn_id`: the token fine-tuning trains after every assistant reply. It is read off the label mask of a
  probe conversation (the same code that masks real training data), so it is the template's own end-of-turn token:
  `<|im_end|>` for ChatML, `<|end|>` for Phi-3 (whose EOS is `<|endoftext|>`), `<|eot_id|>` for Llama-3, `</s>` for
  Mistral. Eval scores it, the engine stops on it, merge and pretrain write it into generation_config.json.
- `stop_token_ids`: every id that ends a generation: end-of-turn first, then the generation config's and the
  tokenizer's EOS. `pad_token_id`: the generation config's pad, else the tokenizer's, else the first stop id.
- `prepare_template`: a tokenizer without a chat template gets llmcycle's (ChatML; turns end with the base's EOS when
  its vocabulary lacks `<|im_start|>`/`<|im_end|>`, so no embedding rows are added). A template that silently drops
  the system message (Phi-3-mini's original) is detected by rendering and, by default, wrapped so the system text is
  folded into the first user turn; either way it is said once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from llmcycle.errors import ConfigError
from llmcycle.progress import say

SystemPolicy = Literal["fold", "template"]
DEFAULT_SYSTEM_POLICY: SystemPolicy = "fold"

PROBE = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi, how are you"}]
SYSTEM_PROBE = "Q7system9marker"

# For a base without a chat template whose vocabulary lacks <|im_start|>/<|im_end|>: ChatML-shaped text, but turns
# end with the base's own EOS, so no embedding rows must be added (which an adapter could not carry to merge/chat).
EOS_CHATML_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Prepended to a template that drops system messages: the system text becomes the start of the first user turn.
FOLD_SYSTEM_PREFIX = (
    "{%- if messages and messages[0]['role'] == 'system' and messages | length > 1 "
    "and messages[0]['content'] is string and messages[1]['content'] is string -%}"
    "{%- set messages = [{'role': messages[1]['role'], "
    "'content': messages[0]['content'] + '\\n\\n' + messages[1]['content']}] + messages[2:] -%}"
    "{%- endif -%}"
)
FOLD_MARK = "messages[0]['content'] + '\\n\\n' + messages[1]['content']"

_said: set[str] = set()


def say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        say(message)


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
    from llmcycle.errors import DataError
    from llmcycle.train.sft_data import IGNORE, end_of_turn_markers, tokenize_with_mask

    markers = end_of_turn_markers(tokenizer)
    try:
        example = tokenize_with_mask(tokenizer, PROBE, "chat template probe", markers)
    except (DataError, ConfigError):
        return None
    trained = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE]
    marker_ids = {tokenizer.convert_tokens_to_ids(m) for m in markers}
    return int(trained[-1]) if trained and trained[-1] in marker_ids else None


CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


def context_length(config: Any, default: int = 2048) -> int:
    """Positions the model was built for, from whichever field its config family uses; `default` when none says."""
    for name in CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


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
    from transformers import GenerationConfig

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


# ---- chat template checks ----------------------------------------------------------------------------------
def drops_system(tokenizer: Any) -> bool:
    """True when the template renders no trace of a system message (or refuses one)."""
    messages = [{"role": "system", "content": SYSTEM_PROBE}, *PROBE]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that raises on a system role drops it as surely as one that ignores it
        return True
    return SYSTEM_PROBE not in text


def fold_system_template(template: str) -> str:
    return template if FOLD_MARK in template else FOLD_SYSTEM_PREFIX + template


def prepare_template(tokenizer: Any, name: str = "model", system: SystemPolicy = DEFAULT_SYSTEM_POLICY) -> str:
    """Give the tokenizer a usable chat template in place; returns where it came from (for manifests)."""
    from llmcycle.tokenizer import CHAT_TEMPLATE, IM_END, IM_START

    source = "base"
    if not getattr(tokenizer, "chat_template", None):
        vocab = tokenizer.get_vocab()
        if IM_START in vocab and IM_END in vocab:
            tokenizer.chat_template, source = CHAT_TEMPLATE, "llmcycle"
        elif tokenizer.eos_token is not None:
            tokenizer.chat_template, source = EOS_CHATML_TEMPLATE, "llmcycle (turns end with the base's EOS)"
        else:
            raise ConfigError(f"{name}: tokenizer has neither a chat template nor an EOS token to end turns with")
        if tokenizer.bos_token is None and source == "llmcycle":
            tokenizer.bos_token = tokenizer.eos_token or IM_END
        say_once(f"{name}: has no chat template; using {source}'s ChatML-shaped one")
    if FOLD_MARK not in tokenizer.chat_template and drops_system(tokenizer):
        if system == "fold":
            tokenizer.chat_template = fold_system_template(tokenizer.chat_template)
            source += " + system folded into the first user turn"
            say_once(f"{name}: its chat template drops system messages; folding the system text into the first "
                     "user turn (the default; finetune's system_message: template leaves them to the template)")
        else:
            say_once(f"{name}: its chat template drops system messages; they are ignored "
                     "(system_message: fold, the default, folds them into the first user turn)")
    return source
