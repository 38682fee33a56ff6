"""Byte-level BPE tokenizer trained on the train split, saved as a standard `AutoTokenizer` dir with a chat template.

The template is ChatML-shaped and marks assistant turns with `{% generation %}` so assistant-only loss works with
`apply_chat_template(..., return_assistant_tokens_mask=True)`. `<|im_end|>` ends a turn and is the EOS token, so a
fine-tuned model stops where its turn stops; `<|endoftext|>` starts every document and pads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pydantic import Field

from llmcycle.artifacts import open_artifact
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import DataError, ModelLoadError, first_line
from llmcycle.progress import say
from llmcycle.records import read_jsonl, split_path

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


class TokenizerConfig(StageConfig):
    vocab_size: int = Field(8192, ge=300, le=1_000_000)
    min_frequency: int = Field(2, ge=1)
    model_max_length: int = Field(2048, ge=16)
    max_records: int | None = Field(None, ge=1, description="Train on at most this many records (None = all).")


def training_texts(data_dir: str | Path, max_records: int | None = None) -> Iterator[str]:
    """Texts the BPE sees: message contents, role headers and text records from the train split only."""
    yield from ("system", "user", "assistant")
    for count, (lineno, rec) in enumerate(read_jsonl(split_path(data_dir, "train"))):
        if max_records is not None and count >= max_records:
            break
        if "messages" in rec:
            for msg in rec["messages"]:
                content = msg.get("content") if isinstance(msg, dict) else None
                if isinstance(content, str):
                    yield content
        elif isinstance(rec.get("text"), str):
            yield rec["text"]
        else:
            raise DataError(f"{split_path(data_dir, 'train')}:{lineno}: record has neither 'messages' nor 'text'")


def train_tokenizer(texts: Iterator[str], cfg: TokenizerConfig):
    """Train a byte-level BPE and wrap it as a PreTrainedTokenizerFast with our special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = 0

    def counted() -> Iterator[str]:
        nonlocal seen
        for text in texts:
            seen += 1
            yield text

    tok.train_from_iterator(counted(), trainer=trainer)
    if seen <= 3:
        raise DataError("tokenizer: the train split holds no text to train on")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=IM_END,
        pad_token=BOS,
        unk_token=None,
        model_max_length=cfg.model_max_length,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def run(cfg: TokenizerConfig, data_dir: str | Path, out: str | Path) -> Path:
    """The `tokenizer` stage: DATA_DIR (train split) -> TOK_DIR."""
    split_path(data_dir, "train")
    with open_artifact(out, "tokenizer", to_dict(cfg), {"data": data_dir}) as art:
        say(f"tokenizer: training byte-level BPE (vocab {cfg.vocab_size}) on {data_dir}/train.jsonl")
        tokenizer = train_tokenizer(training_texts(data_dir, cfg.max_records), cfg)
        tokenizer.save_pretrained(art.dir)
        art.metrics = {"vocab_size": len(tokenizer)}
    return Path(out)


def load_tokenizer(path: str | Path):
    """AutoTokenizer from a dir or hub id, with a one-line error if it does not load."""
    from transformers import AutoTokenizer

    from llmcycle.loading import check_exists

    check_exists(path, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises many types here
        raise ModelLoadError(f"{path}: tokenizer does not load ({type(exc).__name__}: {first_line(exc)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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



def render_chat(tokenizer: Any, messages: list[dict[str, str]], where: str, generation_prompt: bool = False) -> str:
    """A conversation rendered with the tokenizer's chat template; a template that refuses it is a data error."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja raises TemplateError / its own exceptions for conversations it refuses
        raise DataError(f"{where}: the chat template refuses this conversation ({first_line(exc)})") from None
