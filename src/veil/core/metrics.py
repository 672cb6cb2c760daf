"""Prometheus metrics, one registry per application (no process-global collectors).

Labels are bounded: the route *template* (`/v1/conversations/{id}`), never a concrete path, a
user id or a query string, so cardinality stays fixed however many users there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self.requests = Counter(
            "veil_http_requests",
            "HTTP requests handled, by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "veil_http_errors",
            "HTTP responses with a 5xx status, by route template and method.",
            ["method", "route"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "veil_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template and method.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_transactions = Histogram(
            "veil_db_transaction_duration_seconds",
            "Duration of named database transactions.",
            ["name", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The mail outbox (veil.core.outbox): what this process's delivery worker did, and what
        # it last saw waiting (the queue is shared, so every process reports the same depth).
        self.mail = Counter(
            "veil_mail_outbox_mails",
            "Mail attempts by this process's outbox worker, by outcome: sent; retried (the attempt "
            "failed and another will follow); failed (the last attempt failed, the mail was dropped).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("sent", "retried", "failed"):  # exported at 0 before the first mail
            self.mail.labels(outcome)
        self.mail_queued = Gauge(
            "veil_mail_outbox_queued",
            "Mails waiting in the outbox (all processes), as this process last saw it.",
            registry=self.registry,
        )
        self.mail_oldest = Gauge(
            "veil_mail_outbox_oldest_seconds",
            "Age of the oldest mail waiting in the outbox, as this process last saw it (0: none).",
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if status >= 500:
            self.errors.labels(method, route).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
