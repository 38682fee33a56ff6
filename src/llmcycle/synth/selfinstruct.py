"""Self-instruct: the teacher writes new prompts from a topic and a few examples, a prompt too close to one already
kept (ROUGE-L) is dropped, then the teacher answers the kept ones and the safety classifier vets each exchange.

Every call is seeded from (seed, call index), so a local teacher gives the same records for the same config.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from llmcycle.evaluate.textmetrics import rouge_l
from llmcycle.progress import say
from llmcycle.safety import Moderator
from llmcycle.synth.config import SynthConfig
from llmcycle.synth.teacher import Messages, Teacher

LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)]|(?:new )?(?:request|prompt|question|instruction)\s*:)\s*", re.I)


@dataclass
class Tally:
    """What happened to the teacher's output, for the card."""

    calls: int = 0
    prompts_written: int = 0
    unusable: int = 0
    too_similar: int = 0
    unsafe: int = 0
    empty_answers: int = 0
    kept: int = 0


def prompt_request(topic: str | None, examples: list[str]) -> Messages:
    """The instruction that asks the teacher for one new user prompt."""
    about = f" about {topic}" if topic else ""
    shown = "".join(f"\n- {e}" for e in examples)
    intro = f"Here are some requests users have sent to an AI assistant:{shown}\n\n" if examples else ""
    return [{"role": "user", "content": f"{intro}Write one new request{about} that a user might send to an AI "
             "assistant, different from the ones above. Reply with the request only."}]


def clean_prompt(text: str, cfg: SynthConfig) -> str | None:
    """The request the teacher wrote: its first non-empty line without list marks or quotes; None if unusable."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = LIST_MARK.sub("", line).strip().strip('"“”\'').strip()
    return line if cfg.min_prompt_chars <= len(line) <= cfg.max_prompt_chars else None


class Diversity:
    """Kept prompts; a candidate passes when its ROUGE-L F1 with every kept one stays below the threshold."""

    def __init__(self, threshold: float, start: list[str]) -> None:
        self.threshold, self.kept = threshold, list(start)

    def admit(self, prompt: str) -> bool:
        if any(rouge_l(prompt, other) >= self.threshold for other in self.kept):
            return False
        self.kept.append(prompt)
        return True


def new_prompts(teacher: Teacher, cfg: SynthConfig, tally: Tally) -> list[str]:
    """Prompts written by the teacher until `records` are kept or the call budget is spent."""
    rng = random.Random(cfg.seed)
    diversity = Diversity(cfg.max_similarity, cfg.seed_prompts)
    budget = cfg.max_calls or 4 * cfg.records
    found: list[str] = []
    while len(found) < cfg.records and tally.calls < budget:
        size = min(cfg.batch_size, budget - tally.calls)
        pool = cfg.seed_prompts + found
        requests = [prompt_request(cfg.topics[(tally.calls + i) % len(cfg.topics)] if cfg.topics else None,
                                   rng.sample(pool, min(cfg.examples_per_call, len(pool)))) for i in range(size)]
        texts = teacher.chat(requests, cfg.prompt_temperature, min(cfg.max_new_tokens, 128), cfg.seed + tally.calls)
        tally.calls += size
        for text in texts:
            prompt = clean_prompt(text, cfg)
            tally.prompts_written += 1
            if prompt is None:
                tally.unusable += 1
            elif not diversity.admit(prompt):
                tally.too_similar += 1
            elif len(found) < cfg.records:
                found.append(prompt)
        say(f"synth: {len(found)}/{cfg.records} prompts after {tally.calls} calls")
    return found


def answered(teacher: Teacher, prompts: list[str], cfg: SynthConfig, tally: Tally) -> list[dict[str, Any]]:
    """Chat records of the kept prompts and the teacher's answers, minus what the safety classifier blocks."""
    moderator = Moderator()
    records = []
    for start in range(0, len(prompts), cfg.batch_size):
        chunk = prompts[start:start + cfg.batch_size]
        replies = teacher.chat([[{"role": "user", "content": p}] for p in chunk], cfg.answer_temperature,
                               cfg.max_new_tokens, cfg.seed + 100_003 + start)
        for prompt, reply in zip(chunk, replies):
            if not reply.strip():
                tally.empty_answers += 1
                continue
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply.strip()}]
            decision, messages = moderator.check_messages(messages)
            if decision.blocked:
                tally.unsafe += 1
                continue
            records.append({"messages": messages})
    tally.kept = len(records)
    return records
