"""Counterfactual data augmentation (Lu et al. 2018; Zhao et al. 2018): gendered words and first names swapped
for their counterpart, so the training data holds each gendered form equally often.

Modes: `add` keeps every record and adds a swapped copy of each one that mentions a gendered term (the copy joins
its original's group, so both land in the same split); `swap` swaps half of those records in place (seeded), which
balances the corpus without growing it. Only the train split is augmented: val and test stay as written, so the
evaluation measures the model, not the augmentation. Case is kept ("He" -> "She", "JOHN" -> "MARY").
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

from llmcycle.data.example import Example, StepReport

PAIRS = """he she|him her|his her|himself herself|man woman|men women|boy girl|boys girls|father mother|
fathers mothers|dad mom|dads moms|son daughter|sons daughters|brother sister|brothers sisters|husband wife|
husbands wives|king queen|kings queens|mr mrs|sir madam|uncle aunt|uncles aunts|nephew niece|gentleman lady|
gentlemen ladies|male female|males females|boyfriend girlfriend|grandfather grandmother|grandpa grandma|
grandson granddaughter|prince princess|actor actress|actors actresses|waiter waitress|guy gal|guys gals|
mister miss|stepfather stepmother|fiance fiancee|groom bride|monk nun|lord lady|masculine feminine"""
NAMES = """john mary|james patricia|michael jennifer|david linda|robert elizabeth|william susan|joseph jessica|
thomas sarah|daniel karen|matthew nancy|anthony lisa|mark betty|paul sandra|steven ashley|andrew kimberly|
joshua emily|kevin donna|brian michelle|george carol|edward amanda|ryan melissa|jacob deborah|gary stephanie|
eric rebecca|jack laura|peter helen|adam emma|henry olivia|alex alice|sam kate"""


def _table(text: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for pair in text.replace("\n", "").split("|"):
        a, b = pair.split()
        table.setdefault(a, b)
        table.setdefault(b, a)
    return table


TERMS = _table(PAIRS)
NAME_SWAPS = _table(NAMES)
TERMS["her"] = "his"  # "her" is his or him; fixed below by what follows it
TERMS["lady"] = "gentleman"
WORD = re.compile(r"[A-Za-z]+")
FEMALE = {pair.split()[1] for pair in PAIRS.replace("\n", "").split("|")}


def _cased(word: str, swap: str) -> str:
    if word.isupper() and len(word) > 1:
        return swap.upper()
    return swap.capitalize() if word[0].isupper() else swap


def swap_text(text: str, counts: Counter) -> str:
    """The text with every gendered term and paired first name swapped; `counts` gains what was swapped."""

    def replace(match: re.Match) -> str:
        word = match.group()
        low = word.lower()
        if low in TERMS:
            swap = TERMS[low]
            if low == "her":  # possessive before a word ("her book" -> "his book"), else object ("to her" -> "him")
                after = text[match.end():match.end() + 2]
                swap = "his" if after[:1] == " " and after[1:2].isalpha() else "him"
            counts["to_female" if low not in FEMALE else "to_male"] += 1
            return _cased(word, swap)
        if low in NAME_SWAPS and word[0].isupper():
            counts["names"] += 1
            return _cased(word, NAME_SWAPS[low])
        return word

    return WORD.sub(replace, text)


def _swapped_record(record: dict[str, Any], counts: Counter) -> dict[str, Any]:
    out = dict(record)
    if "messages" in record:
        out["messages"] = [{**m, "content": swap_text(m["content"], counts)} for m in record["messages"]]
    else:
        out["text"] = swap_text(record["text"], counts)
    out["meta"] = {**record.get("meta", {}), "counterfactual": True}
    return out


def mentions_gender(example: Example) -> bool:
    return any(w.lower() in TERMS or (w.lower() in NAME_SWAPS and w[0].isupper())
               for text in example.contents() for w in WORD.findall(text))


def counterfactual(train: list[Example], mode: str, seed: int) -> tuple[list[Example], StepReport]:
    """The augmented train split and the card's report of it (records added or swapped, words swapped)."""
    counts: Counter = Counter()
    gendered = [i for i, e in enumerate(train) if mentions_gender(e)]
    out = list(train)
    if mode == "add":
        for i in gendered:
            e = train[i]
            out.append(Example(_swapped_record(e.record, counts), e.group, e.variant + "+cf"))
    else:
        chosen = set(random.Random(seed).sample(gendered, len(gendered) // 2))
        for i in chosen:
            out[i] = Example(_swapped_record(train[i].record, counts), train[i].group, train[i].variant)
    details = {"mode": mode, "gendered_records": len(gendered), "added": len(out) - len(train),
               "swapped_records": len(gendered) if mode == "add" else len(gendered) // 2,
               "words_to_female": counts["to_female"], "words_to_male": counts["to_male"],
               "names_swapped": counts["names"]}
    return out, StepReport("counterfactual", True, changed=details["swapped_records"], details=details)
