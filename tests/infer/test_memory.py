"""The chat history window: system message kept, oldest turns dropped first, turn limit honoured."""

from __future__ import annotations

import pytest

from llmcycle.errors import DataError
from llmcycle.infer.memory import ChatMemory


def words(messages):
    """A stand-in token counter: one token per word."""
    return sum(len(m["content"].split()) for m in messages)


def filled(memory: ChatMemory, n: int) -> ChatMemory:
    for i in range(n):
        memory.add(f"question {i} a b", f"answer {i} c d")  # 4 + 4 words per turn
    return memory


def test_window_keeps_system_and_drops_oldest_turns():
    memory = filled(ChatMemory(system="be brief"), 5)
    window = memory.window("new one", words, budget=2 + 8 * 2 + 2)
    assert window[0] == {"role": "system", "content": "be brief"}
    assert [m["content"] for m in window[1:]] == ["question 3 a b", "answer 3 c d", "question 4 a b", "answer 4 c d",
                                                  "new one"]
    assert len(memory.transcript()) == 11  # the transcript itself keeps everything


def test_window_with_room_keeps_everything_and_turn_limit_applies():
    memory = filled(ChatMemory(), 5)
    assert len(memory.window("hi", words, budget=1000)) == 11
    memory.max_turns = 2
    window = memory.window("hi", words, budget=1000)
    assert [m["content"] for m in window][0] == "question 3 a b" and len(window) == 5
    memory.max_turns = 0
    assert memory.window("hi", words, budget=1000) == [{"role": "user", "content": "hi"}]


def test_message_that_cannot_fit_is_a_clear_error():
    memory = filled(ChatMemory(system="x " * 10), 2)
    with pytest.raises(DataError, match="too long"):
        memory.window("a b c", words, budget=12)


def test_reset_keeps_system():
    memory = filled(ChatMemory(system="s"), 3)
    memory.reset()
    assert memory.transcript() == [{"role": "system", "content": "s"}]
