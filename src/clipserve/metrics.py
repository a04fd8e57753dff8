"""Prometheus metrics of one app instance (own registry, so several apps can live in one process)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ThroughputMeter:
    """Items per second over a sliding window."""

    def __init__(self, window_s: float = 10.0) -> None:
        self._window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self._events.append((time.monotonic(), count))

    def rate(self) -> float:
        cutoff = time.monotonic() - self._window_s
        with self._lock:
            while self._events and self._events[0][0] < cutoff:
                self._events.popleft()
            return sum(n for _, n in self._events) / self._window_s


class PromptCacheStats(Protocol):
    capacity: int
    hits: int
    misses: int

    def __len__(self) -> int: ...


class _PromptCacheCollector(Collector):
    """Reads the cache's own counters at scrape time."""

    def __init__(self, cache: PromptCacheStats) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("clipserve_prompt_cache_hits", "Prompt embeddings served from the cache",
                                  value=self._cache.hits)  # fmt: skip
        yield CounterMetricFamily("clipserve_prompt_cache_misses", "Prompt embeddings computed",
                                  value=self._cache.misses)  # fmt: skip
        yield GaugeMetricFamily(
            "clipserve_prompt_cache_entries", "Prompt embeddings held", value=len(self._cache)
        )
        yield GaugeMetricFamily(
            "clipserve_prompt_cache_capacity", "Prompt cache capacity", value=self._cache.capacity
        )


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "clipserve_requests", "HTTP requests", ["endpoint", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "clipserve_request_duration_seconds", "HTTP request latency", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.decode_seconds = Histogram(
            "clipserve_decode_seconds", "Per-request fetch, decode, preprocess and tokenize time",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "clipserve_batch_size", "Items per model batch", ["queue"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "clipserve_batch_compute_seconds", "Model time per batch", ["queue"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait_seconds = Histogram(
            "clipserve_queue_wait_seconds", "Time an item waits for its batch", ["queue"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.items = Counter("clipserve_items", "Items encoded by the model", ["queue"], registry=r)
        self.queue_depth = Gauge(
            "clipserve_queue_depth", "Items admitted, not yet batched", ["queue"], registry=r
        )
        self.items_per_second = Gauge(
            "clipserve_items_per_second", "Items encoded per second (10 s window)", ["queue"], registry=r
        )
        self.ready = Gauge("clipserve_ready", "1 when the model is loaded and warmed", registry=r)
        # Revenue is the operator's business, not every scraper's: /metrics is public, so this counter lives in
        # a registry of its own that only /v1/admin/metrics (admin keys) serves.
        self.admin_registry = CollectorRegistry()
        self.charged_micros = Counter(
            "clipserve_charged_micros", "Micro-dollars charged to accounts", ["endpoint"],
            registry=self.admin_registry,
        )  # fmt: skip
        self._meters: dict[str, ThroughputMeter] = {}

    def watch_prompt_cache(self, cache: PromptCacheStats) -> None:
        self.registry.register(_PromptCacheCollector(cache))

    def watch_queue(self, queue: str, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(queue).set_function(depth)
        meter = self._meters.setdefault(queue, ThroughputMeter())
        self.items_per_second.labels(queue).set_function(meter.rate)

    # BatchObserver
    def batch_ran(self, queue: str, size: int, queue_waits_s: Sequence[float], compute_s: float) -> None:
        self.batch_size.labels(queue).observe(size)
        self.batch_seconds.labels(queue).observe(compute_s)
        self.items.labels(queue).inc(size)
        wait_hist = self.queue_wait_seconds.labels(queue)
        for wait in queue_waits_s:
            wait_hist.observe(wait)
        if queue in self._meters:
            self._meters[queue].add(size)
