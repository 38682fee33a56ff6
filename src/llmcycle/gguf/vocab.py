"""Tokenizer <-> GGUF metadata: byte-level BPE tokens, token types, merges, the llama.cpp pre-tokenizer name,
special ids, add_bos and the chat template, read from the HF tokenizer the way llama.cpp's converter reads them.

`PRE_TOKENIZERS` pairs each llama.cpp pre-tokenizer name we write with the HF pre-tokenizer that splits text the
same way; import uses it to repair what transformers' GGUF loader drops (SmolLM2's digit split), export to pick
the name. `end_ids` reads the end-of-turn id from `llmcycle.modeldir`, like every other stage.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llmcycle.gguf import GGUFError
from llmcycle.modeldir import end_of_turn_id

_GENERATION_TAG = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")


def _byte_level(use_regex: bool = True) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split_then_bytes(regex: str) -> dict[str, Any]:
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, _byte_level(use_regex=False)]}


_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "gpt-2": _byte_level(),
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _byte_level()]},
    "qwen2": _split_then_bytes(_WORDS + r"\p{N}" + _REST),
    "llama-bpe": _split_then_bytes(_WORDS + r"\p{N}{1,3}" + _REST),
}
HARMLESS_NORMALIZERS = (None, {"type": "NFC"})  # llama.cpp does not normalize; NFC text is unchanged by NFC


def _same_pre(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Structural match, ignoring offsets-only options that do not change the ids."""
    if not a or a.get("type") != b.get("type"):
        return False
    if a["type"] == "Sequence":
        pa, pb = a.get("pretokenizers", []), b["pretokenizers"]
        return len(pa) == len(pb) and all(_same_pre(x, y) for x, y in zip(pa, pb))
    if a["type"] == "Split":
        return a.get("pattern") == b["pattern"] and str(a.get("behavior")) == "Isolated" and not a.get("invert")
    keys = {k for k in b if k != "trim_offsets"}
    return all(a.get(k, True if k == "use_regex" else None) == b[k] for k in keys)


def pre_name(tokenizer_json: dict[str, Any], where: str) -> str:
    pre = tokenizer_json.get("pre_tokenizer")
    if tokenizer_json.get("normalizer") in HARMLESS_NORMALIZERS:
        for name, spec in PRE_TOKENIZERS.items():
            if _same_pre(pre, spec):
                return name
    raise GGUFError(f"{where}: tokenizer pre-tokenizer {json.dumps(pre)[:80]} has no llama.cpp equivalent "
                    f"llmcycle knows ({', '.join(PRE_TOKENIZERS)})")


def set_pre_tokenizer(tokenizer: Any, name: str) -> bool:
    """Give an HF fast tokenizer the pre-tokenizer llama.cpp uses for `name`; False when we do not know it."""
    spec = PRE_TOKENIZERS.get(name)
    if spec is None:
        return False
    tokenizer.backend_tokenizer.pre_tokenizer = _build(spec)
    return True


def _build(spec: dict[str, Any]):
    from tokenizers import pre_tokenizers as p

    if spec["type"] == "Sequence":
        return p.Sequence([_build(s) for s in spec["pretokenizers"]])
    if spec["type"] == "Split":
        from tokenizers import Regex

        return p.Split(Regex(spec["pattern"]["Regex"]), behavior="isolated", invert=False)
    if spec["type"] == "Digits":
        return p.Digits(individual_digits=spec["individual_digits"])
    return p.ByteLevel(add_prefix_space=spec["add_prefix_space"], use_regex=spec["use_regex"])


def end_ids(tokenizer: Any, generation_config: Any = None) -> tuple[int, int]:
    """(end-of-turn id, end-of-sequence id): the end of turn as `llmcycle.modeldir` decides it for every stage."""
    gen = generation_config.eos_token_id if generation_config is not None else None
    gen_ids = [int(i) for i in (gen if isinstance(gen, (list, tuple)) else [gen]) if i is not None]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else (gen_ids[0] if gen_ids else None)
    if eos is None:
        raise GGUFError("the tokenizer and generation config name no end-of-sequence token")
    return end_of_turn_id(tokenizer), int(eos)


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    bos: int | None
    eos: int
    eot: int
    pad: int | None
    unk: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def _merges(model: dict[str, Any]) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _adds(tokenizer: Any) -> tuple[bool, bool]:
    """Whether encoding plain text adds BOS in front / EOS at the end (what GGUF's add_bos/add_eos record)."""
    with_special = list(tokenizer("a b", add_special_tokens=True)["input_ids"])
    plain = list(tokenizer("a b", add_special_tokens=False)["input_ids"])
    if with_special == plain:
        return False, False
    add_bos = tokenizer.bos_token_id is not None and with_special[:1] == [tokenizer.bos_token_id]
    add_eos = tokenizer.eos_token_id is not None and with_special[-1:] == [tokenizer.eos_token_id]
    return add_bos, add_eos


def gguf_vocab(tokenizer: Any, vocab_size: int, generation_config: Any, where: str) -> Vocab:
    """Everything llama.cpp needs to tokenize like `tokenizer` and stop where our engine stops."""
    from gguf import TokenType

    if not getattr(tokenizer, "is_fast", False):
        raise GGUFError(f"{where}: GGUF export needs a fast (tokenizer.json) tokenizer")
    tj = json.loads(tokenizer.backend_tokenizer.to_str())
    model = tj.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise GGUFError(f"{where}: GGUF export supports byte-level BPE tokenizers, not {model.get('type')}")
    pre = pre_name(tj, where)
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(reverse) >= vocab_size:
        raise GGUFError(f"{where}: the tokenizer has ids up to {max(reverse)} but the model only {vocab_size} rows")
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.USER_DEFINED))
        elif i in added:
            tokens.append(added[i]["content"])
            types.append(int(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED))
        else:
            tokens.append(reverse[i])
            types.append(int(TokenType.NORMAL))
    eot, eos = end_ids(tokenizer, generation_config)
    add_bos, add_eos = _adds(tokenizer)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return Vocab(tokens=tokens, types=types, merges=_merges(model), pre=pre, bos=tokenizer.bos_token_id, eos=eos,
                 eot=eot, pad=tokenizer.pad_token_id, unk=tokenizer.unk_token_id, add_bos=add_bos, add_eos=add_eos,
                 chat_template=_GENERATION_TAG.sub("", template) if template else None)


def write_vocab(writer: Any, vocab: Vocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    if vocab.bos is not None:
        writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    if vocab.eot != vocab.eos:
        writer.add_eot_token_id(vocab.eot)
    if vocab.pad is not None:
        writer.add_pad_token_id(vocab.pad)
    if vocab.unk is not None:
        writer.add_unk_token_id(vocab.unk)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
