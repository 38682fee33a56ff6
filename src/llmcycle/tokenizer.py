"""The `tokenizer` stage: a byte-level BPE trained on the train split, saved as a standard `AutoTokenizer` dir with
llmcycle's chat template (`llmcycle.modeldir.CHAT_TEMPLATE`).

The template is ChatML-shaped and marks assistant turns with `{% generation %}` so assistant-only loss works with
`apply_chat_template(..., return_assistant_tokens_mask=True)`. `<|im_end|>` ends a turn and is the EOS token, so a
fine-tuned model stops where its turn stops; `<|endoftext|>` starts every document and pads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pydantic import Field

from llmcycle.artifacts import open_artifact
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import DataError
from llmcycle.modeldir import BOS, CHAT_TEMPLATE, IM_END, SPECIAL_TOKENS
from llmcycle.modeldir.fim import FIM_TOKENS
from llmcycle.progress import say
from llmcycle.records import read_jsonl, split_path


class TokenizerConfig(StageConfig):
    vocab_size: int = Field(8192, ge=300, le=1_000_000)
    min_frequency: int = Field(2, ge=1)
    model_max_length: int = Field(2048, ge=16)
    max_records: int | None = Field(None, ge=1, description="Train on at most this many records (None = all).")
    fim: bool = Field(False, description="Also reserve the fill-in-the-middle markers as special tokens.")


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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # heavy: only this stage trains
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS + (list(FIM_TOKENS) if cfg.fim else []),
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
