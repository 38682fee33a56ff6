"""Prefix (KV) caching: a prompt that starts with tokens already run reuses their keys/values instead of
recomputing them, so a chat's time to first token stops growing with its history.

The rule is exact and simple: reuse the longest common *token* prefix. A chat turn's prompt is the previous
prompt + the reply + the new user message, so everything up to the reply is reused; when the memory window drops
the oldest turn or the system message changes, the common prefix ends right there and only the rest is recomputed.
Keys/values depend only on the tokens before them, so the result equals a cold start.

`FastLlama` keeps its last request's cache in place (no copy: the chat case). `PrefixCache` is an LRU of saved
prefixes keyed by token ids, for a server whose requests interleave (shared system prompts across users).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """An LRU of (token ids -> per-layer keys and values [1, kv_heads, len, head_dim]) within a byte budget."""

    def __init__(self, max_bytes: int = 256 << 20, min_tokens: int = 16):
        self.max_bytes, self.min_tokens = max_bytes, min_tokens
        self.entries: OrderedDict[tuple[int, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def lookup(self, ids: Sequence[int]) -> tuple[int, list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """(n, keys, values) of the saved entry sharing the longest prefix with `ids` (n = 0: nothing useful)."""
        best, best_key = 0, None
        for key in self.entries:
            n = common_prefix(key, ids)
            if n > best:
                best, best_key = n, key
        if best_key is None or best < self.min_tokens:
            self.misses += 1
            return 0, None, None
        self.hits += 1
        self.entries.move_to_end(best_key)
        keys, values = self.entries[best_key]
        return best, keys, values

    def insert(self, ids: Sequence[int], keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Save copies of the first len(ids) slots of a batch-1 cache; an entry that is a prefix of it goes."""
        n = len(ids)
        if n < self.min_tokens:
            return
        key = tuple(int(t) for t in ids)
        for old in [k for k in self.entries if len(k) <= n and key[:len(k)] == k]:
            self._drop(old)
        saved = ([k[:1, :, :n].clone() for k in keys], [v[:1, :, :n].clone() for v in values])
        size = sum(t.numel() * t.element_size() for t in saved[0] + saved[1])
        if size > self.max_bytes:
            return
        self.entries[key] = saved
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: tuple[int, ...]) -> None:
        keys, values = self.entries.pop(key)
        self.bytes -= sum(t.numel() * t.element_size() for t in keys + values)
