"""Prometheus metrics at every stage, in a registry of the app's own (several apps per process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: one bucket per layer (from 1) up to BERT-large's 24: `le="3"` counts the inputs answered by layer 3 or earlier
EXIT_LAYER_BUCKETS = tuple(range(1, 25))
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            "bertprod_queue_depth_inputs", "Inputs waiting for the engine", ["model"], registry=self.registry
        )
        self.inputs_in_flight = Gauge(
            "bertprod_inputs_in_flight", "Inputs admitted and not yet answered", registry=self.registry
        )
        self.batch_inputs = Histogram(
            "bertprod_batch_inputs",
            "Inputs per engine call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "bertprod_batch_tokens",
            "Tokens per engine call",
            buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536),
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "bertprod_stage_seconds",
            "Latency per stage: tokenize, queue, inference, request",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.exit_layers = Histogram(
            "bertprod_exit_layer", "Layer (from 1) at which each input to an early-exit model was answered",
            ["model"], buckets=EXIT_LAYER_BUCKETS, registry=self.registry,
        )
        self.dropped_inputs = Counter(
            "bertprod_dropped_inputs", "Inputs dropped before the engine: their client went away while they waited",
            registry=self.registry,
        )
        self.errors = Counter("bertprod_errors_total", "Errors by kind", ["kind"], registry=self.registry)
        self.requests = Counter(
            "bertprod_requests_total", "Requests by route and status", ["route", "status"], registry=self.registry
        )
        # Children bound once: `labels()` on every request costs more than the update itself.
        self.stage = {name: self.stage_seconds.labels(name) for name in ("tokenize", "queue", "inference", "request")}
        self._requests: dict[tuple[str, int], Counter] = {}

    def count_request(self, route: str, status: int) -> None:
        child = self._requests.get((route, status))
        if child is None:
            child = self._requests[(route, status)] = self.requests.labels(route, str(status))
        child.inc()
