"""A streamed token's SSE frame, made from its choice's template, is byte for byte the frame built from the whole
chunk (chat and text completions, one choice and several, text that JSON must escape)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmcycle.serve.generation import sse
from llmcycle.serve.responses import ContentFrames, _delta_chunk


@pytest.mark.parametrize("kind", ["chat", "text"])
@pytest.mark.parametrize("n", [1, 3])
def test_template_frames_equal_whole_chunk_frames(kind, n):
    job = SimpleNamespace(kind=kind, n=n, rid="chatcmpl-abc", created=1_700_000_000,
                          served=SimpleNamespace(name="model", model_hash="h1"), choice_id=lambda i: f"r-{i}")
    frames = ContentFrames(job)
    for text in ["Hi", ' é "quoted" \\ back\nslash \x00 <PHONE> \u2028 😀', "x" * 300]:
        for index in range(n):
            assert frames(index, text) == sse(_delta_chunk(job, index, text, None, None))
