"""llama.cpp (the `xllamacpp` wheel) as the reference runtime for GGUF files: tokenize, greedy-continue token
ids, chat. Tests and benchmarks check what we export against it; nothing in the lifecycle needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from llmcycle.errors import HardwareError


class LlamaCpp:
    """One llama.cpp server (in process) holding one GGUF model, one slot, greedy by default."""

    def __init__(self, path: str | Path, n_ctx: int = 512, threads: int = 1, exact: bool = False):
        try:
            import xllamacpp
        except ImportError:
            raise HardwareError("llama.cpp is not installed (pip install xllamacpp)") from None
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        if exact:  # llama.cpp keeps K/V in f16 and its CPU flash attention rounds Q to f16: off for f32 checks
            params.cache_type_k = xllamacpp.ggml_type.GGML_TYPE_F32
            params.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
            params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.server = xllamacpp.Server(params)
        self.url = self.server.listening_address

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        body = {"content": text, "add_special": add_special, "parse_special": True}
        return [int(t) for t in self._post("/tokenize", body)["tokens"]]

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        reply = httpx.post(f"{self.url}{route}", json=body, timeout=300)
        if reply.status_code != 200:
            raise RuntimeError(f"llama.cpp {route}: {reply.status_code} {reply.text[:200]}")
        return reply.json()

    def greedy(self, prompt: Sequence[int] | str, n: int, ignore_eos: bool = True) -> list[int]:
        """The next `n` greedy token ids after `prompt` (token ids, or text tokenized by llama.cpp)."""
        body = {"prompt": prompt if isinstance(prompt, str) else [int(t) for t in prompt], "n_predict": n,
                "temperature": 0.0, "top_k": 1, "samplers": ["top_k"], "ignore_eos": ignore_eos,
                "return_tokens": True, "cache_prompt": True}
        return [int(t) for t in self._post("/completion", body)["tokens"]]

    def chat(self, messages: Sequence[dict], max_tokens: int = 64) -> str:
        """The assistant's reply through the GGUF's own chat template, greedy."""
        reply = self.server.handle_chat_completions({"messages": list(messages), "max_tokens": max_tokens,
                                                     "temperature": 0.0, "top_k": 1})
        if "choices" not in reply:
            raise RuntimeError(f"llama.cpp: {reply}")
        return str(reply["choices"][0]["message"]["content"])

    def close(self) -> None:
        self.server = None

    def __enter__(self) -> "LlamaCpp":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
