"""Teachers: anything that answers a batch of conversations. A local model (dir, GGUF, named base) runs in our
engine; a URL is an OpenAI-compatible server (`/v1/chat/completions`), `llmcycle serve` included.

Opening a teacher proves it works (the model loads; the server answers `/v1/models`), so a bad teacher is refused in
one line before anything is generated or written.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any, Protocol, Sequence

from llmcycle.errors import UserError, first_line
from llmcycle.infer import Engine, GenerationSettings

Messages = list[dict[str, str]]


class TeacherError(UserError):
    """The teacher cannot be loaded or reached."""


class Teacher(Protocol):
    name: str

    def chat(self, conversations: Sequence[Messages], temperature: float, max_new_tokens: int,
             seed: int) -> list[str]: ...


class LocalTeacher:
    """A model in our engine; replies are decoded in batches."""

    def __init__(self, path: str, batch_size: int) -> None:
        self.name, self.batch_size = path, batch_size
        try:
            self.engine = Engine.load(path)
        except UserError as exc:
            raise TeacherError(f"teacher {path}: {exc}") from None
        except Exception as exc:  # transformers and torch raise many kinds for a model that does not load
            raise TeacherError(f"teacher {path}: does not load ({type(exc).__name__}: {first_line(exc)})") from None

    def chat(self, conversations: Sequence[Messages], temperature: float, max_new_tokens: int,
             seed: int) -> list[str]:
        settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature,
                                      do_sample=temperature > 0, seed=seed)
        return [c.text for c in self.engine.chat(list(conversations), settings, self.batch_size)]


class ServerTeacher:
    """An OpenAI-compatible server; one request per conversation."""

    def __init__(self, url: str, model: str, api_key: str | None, timeout_s: float) -> None:
        self.base = url.rstrip("/").removesuffix("/v1")
        self.name, self.model, self.timeout = url, model, timeout_s
        self.headers = {"Content-Type": "application/json",
                        **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._call("GET", "/v1/models", None)

    def _call(self, method: str, path: str, body: dict | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise TeacherError(f"teacher {self.name}: {path} answered HTTP {exc.code} ({first_line(exc.reason)})") \
                from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TeacherError(f"teacher {self.name}: cannot reach the server ({first_line(reason)})") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TeacherError(f"teacher {self.name}: {path} did not answer JSON") from None

    def chat(self, conversations: Sequence[Messages], temperature: float, max_new_tokens: int,
             seed: int) -> list[str]:
        replies = []
        for index, messages in enumerate(conversations):
            body = {"model": self.model, "messages": list(messages), "temperature": temperature,
                    "max_tokens": max_new_tokens, "seed": seed + index}
            answer = self._call("POST", "/v1/chat/completions", body)
            try:
                replies.append(str(answer["choices"][0]["message"]["content"] or ""))
            except (KeyError, IndexError, TypeError):
                raise TeacherError(f"teacher {self.name}: a chat completion without choices[0].message") from None
        return replies


def open_teacher(spec: str | None, model: str, api_key_env: str | None, timeout_s: float,
                 batch_size: int) -> Teacher:
    """The teacher SPEC names, checked to work; TeacherError (one line) when it does not."""
    if not spec:
        raise TeacherError("synth: teacher: give a model dir, a .gguf file or an http(s):// server URL")
    if spec.startswith(("http://", "https://")):
        key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not key:
            raise TeacherError(f"synth: api_key_env: ${api_key_env} is not set")
        return ServerTeacher(spec, model, key, timeout_s)
    return LocalTeacher(spec, batch_size)
