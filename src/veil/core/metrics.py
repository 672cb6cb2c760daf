"""Prometheus metrics, one registry per application (no process-global collectors).

Every label value comes from a fixed set in the code: a route *template* (`/v1/conversations/{id}`),
a method from the standard list, a reason, a task or a limit's name; never a user id, a concrete
path or a query string. So cardinality stays fixed however many users there are.

Hot paths (a request, a send, a delivery) use children resolved once, here, so that recording is
one `inc()` or `observe()`: no label lookup per event. docs/operations.md ("Metrics") explains
every family; tests/unit/test_metrics.py keeps the two in step.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0, 10.0)
# From commit to push: milliseconds when all is well, seconds under load, minutes never.
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Any other method (a probe's invention) is counted as "other", so it cannot mint new series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

WS_HANDSHAKE_OUTCOMES = (
    "accepted",
    "origin_refused",
    "invalid",
    "unauthorized",
    "rate_limited",
    "unavailable",
)
WS_DISCONNECT_REASONS = (
    "client",  # the client closed, or the connection dropped
    "token_expired",  # the access token that opened it ran out: the client reconnects
    "session_ended",  # logout, revocation, password change, suspension, erasure
    "replaced",  # the same device connected again (here or in another process)
    "too_slow",  # the client did not take its frames
    "unsupported_data",  # a binary frame
    "shutdown",  # this process is stopping
    "error",  # the server failed (logged)
)
WS_FRAMES = ("message", "device_message")
LOGIN_FAILURE_REASONS = (
    "unknown_email",
    "wrong_password",
    "account_inactive",
    "throttled",  # a failed-login budget refused the attempt (429)
    "password_changed",  # the password changed while this login was being checked
    "overloaded",  # every password-hashing slot was busy (503)
)
MAINTENANCE_TASKS = (
    "housekeeping",
    "account_purge",
    "attachment_sweep",
    "backup_sweep",
    "export_archive_sweep",
)
MAINTENANCE_OUTCOMES = ("ok", "skipped", "failed")
MAIL_OUTCOMES = ("sent", "retried", "failed")

_REVISION = re.compile(r"[0-9A-Za-z._-]{1,64}")


@dataclass(frozen=True)
class BuildInfo:
    version: str
    commit: str

    @classmethod
    def of_this_process(cls) -> BuildInfo:
        """The installed package's version, and the commit the image was built from
        (VEIL_REVISION, set by the Dockerfile's build argument); "unknown" when either is missing."""
        try:
            version = importlib.metadata.version("veil")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        commit = os.environ.get("VEIL_REVISION", "").strip()
        return cls(version, commit if _REVISION.fullmatch(commit) else "unknown")


@dataclass(frozen=True)
class MaintenanceTask:
    """The children of one maintenance task, resolved once (the label is `task`: Prometheus
    itself sets `job` on every series)."""

    ok: Counter
    skipped: Counter
    failed: Counter
    last_success: Gauge


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    build: BuildInfo = field(default_factory=BuildInfo.of_this_process)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Gauge(
            "veil_build_info", "Always 1; the labels say what runs.", ["version", "commit"], registry=r
        ).labels(self.build.version, self.build.commit).set(1)

        # --- HTTP ------------------------------------------------------------------------------
        self.requests = Counter(
            "veil_http_requests",
            "HTTP requests handled, by route template, method and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.errors = Counter(
            "veil_http_errors",
            "HTTP responses with a 5xx status, by route template and method.",
            ["method", "route"],
            registry=r,
        )
        self.latency = Histogram(
            "veil_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template and method.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram, Counter | None]] = {}

        # --- database --------------------------------------------------------------------------
        self.db_transactions = Histogram(
            "veil_db_transaction_duration_seconds",
            "Duration of named database transactions.",
            ["name", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.db_pool_max = Gauge(
            "veil_db_pool_max_connections", "Connections this process's pool may open.", registry=r
        )
        self.db_pool_open = Gauge(
            "veil_db_pool_connections", "Connections this process's pool holds open.", registry=r
        )
        self.db_pool_in_use = Gauge(
            "veil_db_pool_connections_in_use",
            "Connections of this process's pool lent out to a request or a worker right now.",
            registry=r,
        )

        # --- WebSocket -------------------------------------------------------------------------
        self.ws_connections = Gauge("veil_ws_connections", "WebSockets open on this process.", registry=r)
        handshakes = Counter(
            "veil_ws_handshakes",
            "WebSocket handshakes, by outcome (accepted, or why it was refused).",
            ["outcome"],
            registry=r,
        )
        self.ws_handshakes = {outcome: handshakes.labels(outcome) for outcome in WS_HANDSHAKE_OUTCOMES}
        disconnects = Counter(
            "veil_ws_disconnects",
            "WebSockets that ended, by reason.",
            ["reason"],
            registry=r,
        )
        self.ws_disconnects = {reason: disconnects.labels(reason) for reason in WS_DISCONNECT_REASONS}
        deliveries = Counter(
            "veil_ws_deliveries",
            "Frames carrying a message or a device message written to a WebSocket (live or replay).",
            ["frame"],
            registry=r,
        )
        self.ws_delivered_message = deliveries.labels("message")
        self.ws_delivered_device_message = deliveries.labels("device_message")
        self.ws_delivery_lag = Histogram(
            "veil_ws_delivery_lag_seconds",
            "From a message's commit to its push on a recipient's WebSocket, for live deliveries "
            "(messages read once for every socket just after their notification).",
            buckets=_LAG_BUCKETS,
            registry=r,
        )

        # --- messaging, auth, limits -----------------------------------------------------------
        self.messages_sent = Counter(
            "veil_messages_sent",
            "Conversation messages stored (a retry of a stored message is not counted).",
            registry=r,
        )
        login_failures = Counter(
            "veil_login_failures",
            "Logins refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.login_failures = {reason: login_failures.labels(reason) for reason in LOGIN_FAILURE_REASONS}
        self._rate_limit_rejections = Counter(
            "veil_rate_limit_rejections",
            "Hits a rate-limit budget refused, by the budget's name.",
            ["limit"],
            registry=r,
        )

        # --- mail outbox (veil.core.mail_delivery) ---------------------------------------------
        # What this process's delivery worker did, and what it last saw waiting (the queue is
        # shared, so every process that sends mail reports the same depth).
        self.mail = Counter(
            "veil_mail_outbox_mails",
            "Mail attempts by this process's outbox worker, by outcome: sent; retried (the attempt "
            "failed and another will follow); failed (the last attempt failed, the mail was dropped).",
            ["outcome"],
            registry=r,
        )
        for outcome in MAIL_OUTCOMES:  # exported at 0 before the first mail
            self.mail.labels(outcome)
        self.mail_queued = Gauge(
            "veil_mail_outbox_queued",
            "Mails waiting in the outbox (all processes), as this process last saw it.",
            registry=r,
        )
        self.mail_oldest = Gauge(
            "veil_mail_outbox_oldest_seconds",
            "Age of the oldest mail waiting in the outbox, as this process last saw it (0: none).",
            registry=r,
        )

        # --- maintenance and queues (veil.maintenance) -----------------------------------------
        runs = Counter(
            "veil_maintenance_runs",
            "Maintenance task runs, by task and outcome (skipped: another process held the round's lock).",
            ["task", "outcome"],
            registry=r,
        )
        last_success = Gauge(
            "veil_maintenance_last_success_timestamp_seconds",
            "When this process last completed the task (Unix time; 0: not yet).",
            ["task"],
            registry=r,
        )
        self.maintenance = {
            task: MaintenanceTask(
                runs.labels(task, "ok"),
                runs.labels(task, "skipped"),
                runs.labels(task, "failed"),
                last_success.labels(task),
            )
            for task in MAINTENANCE_TASKS
        }
        self.device_messages_queued = Gauge(
            "veil_device_messages_queued",
            "Device messages waiting for their recipient device (all processes), as last counted.",
            registry=r,
        )
        self.export_jobs_queued = Gauge(
            "veil_export_jobs_queued",
            "Data exports waiting to be built (all processes), as last counted.",
            registry=r,
        )
        self.export_jobs_oldest = Gauge(
            "veil_export_jobs_oldest_seconds",
            "Age of the oldest data export waiting to be built, as last counted (0: none).",
            registry=r,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in _METHODS else "other", route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(key[0], route, str(status)),
                self.latency.labels(key[0], route),
                self.errors.labels(key[0], route) if status >= 500 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def rate_limited(self, limit: str) -> None:
        """A budget refused a hit (rare: the child is looked up each time)."""
        self._rate_limit_rejections.labels(limit).inc()

    def watch_db_pool(self, max_size: int, usage: Callable[[], tuple[int, int]]) -> None:
        """Read the pool at scrape time: `usage()` gives (open, in use) without any I/O."""
        self.db_pool_max.set(max_size)
        self.db_pool_open.set_function(lambda: usage()[0])
        self.db_pool_in_use.set_function(lambda: usage()[1])

    def render(self) -> bytes:
        return generate_latest(self.registry)
