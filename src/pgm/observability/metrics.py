"""Prometheus metrics (docs/configuration.md#operations-endpoints): requests, provider calls, outbox, saga traffic.
One registry per app, so several apps in one process (tests) never collide."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# The children of one answered request's series, and the old PGM's labels of it (Metrics.observe_request).
_RequestSeries = tuple[Counter, Histogram, Summary, tuple[str, str, str, str]]


class Metrics:
    """Every metric the service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._request_series: dict[tuple[str, str | None, int], _RequestSeries] = {}
        self.http_requests = Counter(
            "pgm_http_requests_total", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "pgm_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )
        self.requests_shed = Counter(
            "pgm_requests_shed_total",
            "/v3 requests answered 503 at once because PGM_MAX_IN_FLIGHT were already running",
            registry=self.registry,
        )
        self.provider_calls = Counter(
            "pgm_provider_calls_total",
            "Calls to payment providers by outcome (ok, refused, unknown)",
            ["provider", "operation", "outcome"],
            registry=self.registry,
        )
        self.provider_latency = Histogram(
            "pgm_provider_call_duration_seconds",
            "Latency of calls to payment providers",
            ["provider", "operation"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "pgm_outbox_messages",
            "Outbox messages by destination and status",
            ["destination", "status"],
            registry=self.registry,
        )
        self.outbox_attempts = Counter(
            "pgm_outbox_delivery_attempts_total",
            "Outbox delivery attempts by result (delivered, retry, dead)",
            ["destination", "result"],
            registry=self.registry,
        )
        self.callbacks = Counter(
            "pgm_provider_callbacks_total",
            "Provider callbacks by result (accepted, rejected, duplicate, deferred)",
            ["provider", "result"],
            registry=self.registry,
        )
        self.reconciliations = Counter(
            "pgm_reconciliation_checks_total",
            "Reconciliation checks of unsettled payments and refunds, and looks for refunds of paid ones, by result",
            ["provider", "result"],
            registry=self.registry,
        )
        self.saga_commands = Counter(
            "pgm_saga_commands_total", "Saga commands received", ["command", "result"], registry=self.registry
        )
        self.saga_events = Counter("pgm_saga_events_total", "Saga events emitted", ["event"], registry=self.registry)
        # The old PGM's HTTP server timer, as Quarkus' Micrometer Prometheus registry exports it (its
        # _count and _sum), so dashboards and alerts built on it keep working after a switch.
        self.old_pgm_http_server = Summary(
            "http_server_requests_seconds",
            "HTTP requests answered, as the old PGM exported them (Micrometer names and labels)",
            ["method", "outcome", "status", "uri"],
            registry=self.registry,
        )
        self.old_pgm_http_server_max = RollingMax(
            "http_server_requests_seconds_max",
            "Longest HTTP request of the last minute, as the old PGM exported it (Micrometer's decaying max)",
            ("method", "outcome", "status", "uri"),
        )
        self.registry.register(self.old_pgm_http_server_max)
        # Outcomes, counted as they are recorded (services/outcome_metrics.py).
        self.payments = Counter(
            "pgm_payments_total",
            "Payments reaching a status (PENDING, ACCEPTED, FAILED, UNKNOWN) by provider and kind",
            ["provider", "kind", "status"],
            registry=self.registry,
        )
        self.refunds = Counter(
            "pgm_refunds_total", "Refunds reaching a status by provider", ["provider", "status"], registry=self.registry
        )
        # Read from the store at each scrape (observability/store_gauges.py): the same in every replica.
        self.reconciliation_queue = Gauge(
            "pgm_reconciliation_queue",
            "Payments and refunds left PENDING or UNKNOWN, waiting for a provider check, by kind and provider",
            ["kind", "provider"],
            registry=self.registry,
        )
        self.inbox_pending = Gauge(
            "pgm_saga_inbox_pending_commands", "Saga commands received and not yet done", registry=self.registry
        )
        self.inbox_oldest_pending = Gauge(
            "pgm_saga_inbox_oldest_pending_seconds",
            "Age of the oldest saga command not yet done (0 when none)",
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """One answered request, in our series and in the old PGM's."""
        series = self._request_series.get((method, route, status))
        if series is None:
            series = self._request_series[(method, route, status)] = self._new_request_series(method, route, status)
        counter, latency, old_pgm_latency, old_pgm_labels = series
        counter.inc()
        latency.observe(seconds)
        old_pgm_latency.observe(seconds)
        self.old_pgm_http_server_max.observe(old_pgm_labels, seconds)

    def _new_request_series(self, method: str, route: str | None, status: int) -> _RequestSeries:
        # `.labels()` takes a lock and builds the label tuple on every call, four times a request
        # (docs/performance.md): the children of one (method, route, status) are looked up once.
        # Micrometer's uri is the route template; NOT_FOUND or UNKNOWN when no route matched.
        uri = route or ("NOT_FOUND" if status == 404 else "UNKNOWN")
        old_pgm_labels = (method, _outcome(status), str(status), uri)
        return (
            self.http_requests.labels(method, route or "unmatched", str(status)),
            self.http_latency.labels(method, route or "unmatched"),
            self.old_pgm_http_server.labels(*old_pgm_labels),
            old_pgm_labels,
        )


class RollingMax(Collector):
    """A gauge of the largest value observed over the last minute, per label set, as Micrometer's timers
    report `_max`: three rotating 20-second buffers, so a quiet series decays to nothing within a minute."""

    BUFFER_SECONDS = 20.0
    BUFFERS = 3

    def __init__(
        self, name: str, documentation: str, labels: tuple[str, ...], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self._clock = clock
        self._lock = threading.Lock()
        # label values -> {buffer number: largest value seen in it}
        self._buffers: dict[tuple[str, ...], dict[int, float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        """Record one value for a label set."""
        current = int(self._clock() // self.BUFFER_SECONDS)
        with self._lock:
            buffers = self._buffers.get(labels)
            if buffers is None:
                buffers = self._buffers[labels] = {}
            largest = buffers.get(current)
            if largest is None:
                buffers[current] = value
                # Old buffers go when a new one starts (once in 20 s per label set, not on every request).
                for old in [number for number in buffers if number <= current - self.BUFFERS]:
                    del buffers[old]
            elif value > largest:
                buffers[current] = value

    def collect(self) -> Iterable[Metric]:
        """The current maxima; label sets with nothing in the last minute report 0, as Micrometer does."""
        family = GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))
        current = int(self._clock() // self.BUFFER_SECONDS)
        with self._lock:
            for labels, buffers in self._buffers.items():
                alive = [value for number, value in buffers.items() if number > current - self.BUFFERS]
                family.add_metric(list(labels), max(alive, default=0.0))
        yield family


def _outcome(status: int) -> str:
    """Micrometer's `outcome` tag: the class of the status code."""
    classes = {1: "INFORMATIONAL", 2: "SUCCESS", 3: "REDIRECTION", 4: "CLIENT_ERROR", 5: "SERVER_ERROR"}
    return classes.get(status // 100, "UNKNOWN")
