"""Chat templates and rendering: llmcycle's ChatML template, the fallbacks for a base without one, and the check
for templates that silently drop the system message.

- `CHAT_TEMPLATE` is what the BPE tokenizer stage ships: ChatML-shaped, with `{% generation %}` markers so the
  assistant mask can come from the template itself; `<|im_end|>` ends a turn and is the EOS token.
- `prepare_template`: a tokenizer without a chat template gets llmcycle's (ChatML; turns end with the base's EOS when
  its vocabulary lacks `<|im_start|>`/`<|im_end|>`, so no embedding rows are added). A template that silently drops
  the system message (Phi-3-mini's original) is detected by rendering and, by default, wrapped so the system text is
  folded into the first user turn; either way it is said once.
"""

from __future__ import annotations

from typing import Any, Literal

from llmcycle.errors import ConfigError, DataError, first_line
from llmcycle.progress import say

BOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [BOS, IM_START, IM_END]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] }}{{ '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

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


def render_chat(tokenizer: Any, messages: list[dict[str, str]], where: str, generation_prompt: bool = False) -> str:
    """A conversation rendered with the tokenizer's chat template; a template that refuses it is a data error."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja raises TemplateError / its own exceptions for conversations it refuses
        raise DataError(f"{where}: the chat template refuses this conversation ({first_line(exc)})") from None


def ensure_chat_template(tokenizer: Any) -> Any:
    """Give a tokenizer without a chat template ours (its own special tokens must then exist)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer
    missing = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token or IM_END
    return tokenizer


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
