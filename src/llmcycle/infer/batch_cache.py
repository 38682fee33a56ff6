"""The shared KV cache of continuous batching (see continuous.py).

Per layer [rows, kv heads, columns, head dim]; running rows are [0, n) and all of them write the same column each
step. A joining prompt's KV is copied right-aligned so it ends at the current column; `valid` masks the columns a
row does not own. When the column reaches the end, the cache is compacted left (or grown, up to `max_context`).
"""

from __future__ import annotations

from typing import Any

import torch


class BatchCache:
    """The shared KV cache: rows [0, n) are running; all of them write column `column` next."""

    def __init__(self, backend: Any, rows: int, max_context: int, start: int = 256):
        self.backend, self.rows, self.max_context = backend, rows, max_context
        self.length = min(start, max_context)
        self.keys = self.values = []
        self.valid = torch.zeros(0)
        self._allocate(self.length)
        self.column = 0
        self.starts: list[int] = []  # per running row: its first column

    def _allocate(self, length: int) -> None:
        b = self.backend
        shape = (self.rows, b.n_kv, length, b.head_dim)
        old_k, old_v, old_valid = self.keys, self.values, self.valid
        self.keys = [torch.zeros(shape, dtype=b.dtype, device=b.device) for _ in b.layers]
        self.values = [torch.zeros(shape, dtype=b.dtype, device=b.device) for _ in b.layers]
        self.valid = torch.zeros(self.rows, length, dtype=torch.bool, device=b.device)
        self._views: tuple[int, int, list[torch.Tensor], list[torch.Tensor]] | None = None
        if old_k:
            keep = old_valid.shape[1]
            for new, old in zip(self.keys + self.values, old_k + old_v):
                new[:, :, :keep] = old
            self.valid[:, :keep] = old_valid
        self.length = length

    def _shift(self, by: int) -> None:
        """Move every running row's columns by `by` (> 0 right, < 0 left)."""
        n, col = len(self.starts), self.column
        lo, hi = (0, col) if by > 0 else (-by, col)
        for t in self.keys + self.values:
            t[:n, :, lo + by:hi + by] = t[:n, :, lo:hi].clone()
        self.valid[:n, lo + by:hi + by] = self.valid[:n, lo:hi].clone()
        if by > 0:
            self.valid[:n, :by] = False
        else:
            self.valid[:n, col + by:] = False
        self.column += by
        self.starts = [s + by for s in self.starts]

    def make_room(self, need: int) -> None:
        """Ensure columns up to `need` (exclusive) exist: compact left first, grow when that is not enough."""
        if need <= self.length:
            return
        if self.starts and min(self.starts) > 0:
            need -= min(self.starts)
            self._shift(-min(self.starts))
        if need > self.length:
            self._allocate(min(self.max_context, max(need, 2 * self.length)))

    def insert(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> int:
        """Copy one prefilled prompt's KV ([1, kv, p, hd]) into the next free row, ending at the current column."""
        p = keys[0].shape[2]
        if not self.starts:
            self.column = 0
            self.valid.zero_()
        if self.column < p:
            if p + 1 > self.length:
                self._allocate(min(self.max_context, max(p + 1, 2 * self.length)))
            self._shift(p - self.column)
        self.make_room(self.column + 1)
        row, col = len(self.starts), self.column
        for dst, src in zip(self.keys + self.values, keys + values):
            dst[row, :, col - p:col] = src[0]
        self.valid[row] = False
        self.valid[row, col - p:col] = True
        self.starts.append(col - p)
        return row

    def remove(self, row: int) -> None:
        """Free a row: the last running row moves into its place (one row's copy) so rows stay [0, n)."""
        last = len(self.starts) - 1
        if row != last:
            for t in self.keys + self.values:
                t[row] = t[last]
            self.valid[row] = self.valid[last]
            self.starts[row] = self.starts[last]
        self.valid[last] = False
        self.starts.pop()

    def views(self, n: int, low: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every layer's keys and values of rows [0, n) from column `low` on, made once while n, low and the
        tensors stay the same (most steps), not sliced again per layer and step."""
        if self._views is None or self._views[:2] != (n, low):
            self._views = (n, low, [k[:n, :, low:] for k in self.keys], [v[:n, :, low:] for v in self.values])
        return self._views[2], self._views[3]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits [n, vocab] for one token per running row, written at the current column.

        Each row owns one contiguous run of columns ending at the current one, so attention reads the columns from
        the earliest row's start only, and needs no mask at all when every row starts there (always at one client);
        otherwise the mask is made additive once per step, not converted from booleans by every layer."""
        self.make_room(self.column + 1)
        n, col = len(self.starts), self.column
        self.valid[:n, col] = True
        low = min(self.starts)
        mask = None
        if any(start != low for start in self.starts):
            mask = torch.zeros(n, 1, 1, col + 1 - low, dtype=self.backend.dtype, device=self.valid.device)
            mask.masked_fill_(~self.valid[:n, None, None, low:col + 1], float("-inf"))
        keys, values = self.views(n, low)
        logits = self.backend.step_rows(keys, values, tokens, positions, col - low, mask)
        self.column = col + 1
        return logits
