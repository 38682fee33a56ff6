"""Incremental decoding of a growing reply: at every length the text is byte for byte what decoding all its ids
gives, on a byte-level BPE and on a byte-fallback (Llama-style) tokenizer, over multi-byte UTF-8, split characters,
stray bytes, special tokens and spaces before punctuation; and it does settle a prefix (the point of it)."""

from __future__ import annotations

import json
import random

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llmcycle.infer.reply_text import ReplyText

TEXTS = ["Café au lait, s'il vous plaît ! Ça coûte 3 € ?", "日本語のテキストと絵文字 🙂🚀 が混ざる。",
         "I don't know , he said . Isn't it ? We 're here 'm sure n't", "naïve façade — “quotes” ‘and’ … ok",
         "Ελληνικά και русский текст 123 456", "tabs\tand\nnew lines  double  spaces"]


def byte_level() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   clean_up_tokenization_spaces=True,  # spaces before punctuation dropped
                                   clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True)


def byte_fallback() -> PreTrainedTokenizerFast:
    """Llama 2's kind: Metaspace pieces, characters outside the vocabulary as <0xNN> byte tokens, the first space
    stripped (a BPE trained on ASCII text, then given the 256 byte tokens as ordinary vocabulary)."""
    def llama_like(model: models.BPE) -> Tokenizer:
        tok = Tokenizer(model)
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        return tok

    trained = llama_like(models.BPE(unk_token="<unk>"))
    ascii_only = [t.encode("ascii", "ignore").decode() for t in TEXTS]
    trained.train_from_iterator(ascii_only * 3, trainers.BpeTrainer(vocab_size=200,
                                                                    special_tokens=["<unk>", "<s>", "</s>"]))
    spec = json.loads(trained.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{i:02X}>": 3 + i for i in range(256)}}
    for token in sorted(spec["vocab"], key=spec["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    tok = llama_like(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)


def sequences(tokenizer, rng: random.Random) -> list[list[int]]:
    """Replies as a model writes them (encoded texts, with special tokens inside) and random ids (bytes of split
    characters in any order, stray continuation bytes)."""
    out = [tokenizer.encode(" ".join(TEXTS), add_special_tokens=False)]
    specials = [tokenizer.bos_token_id, tokenizer.eos_token_id]
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        ids.insert(rng.randrange(len(ids)), rng.choice(specials))
        out.append(ids)
    out += [[rng.randrange(len(tokenizer)) for _ in range(120)] for _ in range(8)]
    return out


@pytest.mark.parametrize("make", [byte_level, byte_fallback])
def test_every_prefix_decodes_as_the_whole(make):
    tokenizer = make()
    rng = random.Random(0)
    settled = 0
    for ids in sequences(tokenizer, rng):
        reply = ReplyText(tokenizer)
        for n in range(len(ids) + 1):
            assert reply.text(ids[:n]) == tokenizer.decode(ids[:n], skip_special_tokens=True), (ids, n)
        settled += reply.anchor
    assert settled > 0  # the prefix did settle: each call decoded only the last tokens


def test_multibyte_characters_are_not_split_at_a_cut():
    tokenizer = byte_fallback()
    euro = tokenizer.encode("€", add_special_tokens=False)
    euro = euro[-3:]  # its three byte tokens, without the leading space's piece
    assert tokenizer.convert_ids_to_tokens(euro) == ["<0xE2>", "<0x82>", "<0xAC>"]
    ids = tokenizer.encode("abc def ghi", add_special_tokens=False) * 3 + euro * 10
    reply = ReplyText(tokenizer)
    for n in range(len(ids) + 1):
        assert reply.text(ids[:n]) == tokenizer.decode(ids[:n], skip_special_tokens=True)
    assert reply.text(ids).endswith("€" * 10) and reply.anchor > 0
