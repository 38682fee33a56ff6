"""Batch generation from a JSONL file: each line a chat record, `{"prompt": TEXT}` or `{"prefix", "suffix"}` (infill:
the reply is the middle); each output line is the input
record plus `reply` and `finish_reason`. A chat record ending with an assistant turn is answered from the turns
before it (that last turn stays in the record as the reference)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from llmcycle.errors import DataError
from llmcycle.infer.infill import infill
from llmcycle.progress import bar
from llmcycle.records import check_chat, read_jsonl, write_jsonl


def read_requests(path: str | Path) -> list[tuple[dict[str, Any], Any]]:
    """(record, prompt) pairs; prompt is a str for raw prompts or a message list for chats."""
    requests = []
    for lineno, record in read_jsonl(path):
        where = f"{path}:{lineno}"
        if "messages" in record:
            messages = check_chat(record, where)
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            if not messages or messages[-1]["role"] != "user":
                raise DataError(f"{where}: the conversation has no user turn to answer")
            requests.append((record, messages))
        elif "prefix" in record or "suffix" in record:
            pair = (record.get("prefix", ""), record.get("suffix", ""))
            if not all(isinstance(part, str) for part in pair) or not any(pair):
                raise DataError(f"{where}: 'prefix' and 'suffix' must be strings, not both empty")
            requests.append((record, pair))
        elif "prompt" in record:
            if not isinstance(record["prompt"], str) or not record["prompt"].strip():
                raise DataError(f"{where}: field 'prompt' must be a non-empty string")
            requests.append((record, record["prompt"]))
        else:
            raise DataError(f"{where}: expected a chat record ('messages'), a 'prompt' or 'prefix'/'suffix' fields")
    if not requests:
        raise DataError(f"{path}: no requests in the file")
    return requests


def generate_file(engine: Any, settings: Any, input_path: str | Path, output_path: str | Path,
                  batch_size: int = 8) -> int:
    """Answer every request of `input_path` into `output_path` (written atomically); returns the count."""
    requests = read_requests(input_path)
    results = []
    progress = bar(total=len(requests), desc="generate", unit="prompt")
    for start in range(0, len(requests), batch_size):
        chunk = [p for _, p in requests[start:start + batch_size]]
        kinds = {kind: [i for i, p in enumerate(chunk) if isinstance(p, kind)] for kind in (list, tuple, str)}
        answers: dict[int, Any] = {}
        for kind, answer in ((list, engine.chat), (tuple, partial(infill, engine)), (str, engine.generate)):
            if kinds[kind]:
                answers.update(zip(kinds[kind], answer([chunk[i] for i in kinds[kind]], settings, batch_size)))
        results.extend(answers[i] for i in range(len(chunk)))
        progress.update(len(chunk))
    progress.close()
    records = [{**record, "reply": c.text, "finish_reason": c.finish_reason} for (record, _), c in zip(requests, results)]
    return write_jsonl(output_path, records)
