"""What the server measures: Prometheus metrics (`/metrics`) and a short in-memory history for the monitoring
page (`/stats`): per-interval requests, tokens/s and latency percentiles, moderation and feedback counts."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter as PCounter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BUCKET_SECONDS = 5
HISTORY = 120  # buckets kept: 10 minutes


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Metrics:
    def __init__(self, gauges: Callable[[], dict[str, float]] | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = PCounter("llmcycle_requests", "HTTP requests by route and status", ["route", "status"],
                                 registry=r)
        self.prompt_tokens = PCounter("llmcycle_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = PCounter("llmcycle_completion_tokens", "Completion tokens generated", registry=r)
        self.ttft = Histogram("llmcycle_time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS,
                              registry=r)
        self.latency = Histogram("llmcycle_request_latency_seconds", "Generation request latency",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.moderation = PCounter("llmcycle_moderation_decisions", "Moderation decisions",
                                   ["side", "category", "action"], registry=r)
        self.feedback = PCounter("llmcycle_feedback", "Feedback received", ["kind"], registry=r)
        self.store_failures = PCounter("llmcycle_store_failures", "Feedback-store and request-log writes that "
                                       "failed or were dropped", ["kind"], registry=r)
        self.queue_depth = Gauge("llmcycle_queue_depth", "Requests waiting for a batch row", registry=r)
        self.batch_occupancy = Gauge("llmcycle_batch_occupancy", "Rows of the running batch in use", registry=r)
        self.streams = Gauge("llmcycle_active_streams", "Streaming responses open", registry=r)
        self.gauges = gauges
        self._lock = threading.Lock()
        self._buckets: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.moderation_counts: Counter = Counter()
        self.started = time.time()

    # ---- recording ------------------------------------------------------------------------------------
    def _bucket(self) -> dict[str, Any]:
        start = int(time.time() // BUCKET_SECONDS) * BUCKET_SECONDS
        if not self._buckets or self._buckets[-1]["t"] != start:
            self._buckets.append({"t": start, "requests": 0, "errors": 0, "tokens": 0, "latency": [], "ttft": []})
        return self._buckets[-1]

    def request(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()
        with self._lock:
            bucket = self._bucket()
            bucket["requests"] += 1
            bucket["errors"] += status >= 400

    def generation(self, prompt_tokens: int, completion_tokens: int, latency: float, ttft: float | None) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
        self.latency.observe(latency)
        if ttft is not None:
            self.ttft.observe(ttft)
        with self._lock:
            bucket = self._bucket()
            bucket["tokens"] += completion_tokens
            bucket["latency"].append(latency)
            if ttft is not None:
                bucket["ttft"].append(ttft)

    def moderated(self, decision: Any) -> None:
        for category, action in decision.actions_taken:
            self.moderation.labels(decision.side, category, action).inc()
            with self._lock:
                self.moderation_counts[f"{category}:{action}"] += 1

    # ---- reading --------------------------------------------------------------------------------------
    def prometheus(self) -> bytes:
        if self.gauges is not None:
            values = self.gauges()
            self.queue_depth.set(values.get("queue_depth", 0))
            self.batch_occupancy.set(values.get("batch_occupancy", 0))
        return generate_latest(self.registry)

    def history(self) -> dict[str, Any]:
        with self._lock:
            rows = [{"t": b["t"], "requests": b["requests"], "errors": b["errors"],
                     "tokens_per_s": b["tokens"] / BUCKET_SECONDS,
                     "latency_p50": percentile(b["latency"], 0.5), "latency_p95": percentile(b["latency"], 0.95),
                     "ttft_p50": percentile(b["ttft"], 0.5), "ttft_p95": percentile(b["ttft"], 0.95)}
                    for b in self._buckets]
            every = [x for b in self._buckets for x in b["latency"]]
            ttft = [x for b in self._buckets for x in b["ttft"]]
            return {"bucket_seconds": BUCKET_SECONDS, "series": rows, "moderation": dict(self.moderation_counts),
                    "uptime_s": time.time() - self.started,
                    "latency": {q: percentile(every, v) for q, v in (("p50", .5), ("p95", .95), ("p99", .99))},
                    "ttft": {q: percentile(ttft, v) for q, v in (("p50", .5), ("p95", .95), ("p99", .99))}}
