"""The metrics a running Veil exports, against what the alert rules and the dashboard use.

One server for the module goes through a short scenario (sign-up, login, failed logins, a
WebSocket that receives a live message and closes, a ticket refused by its rate limit) and
/metrics is read between the steps: each test checks what one step moved. Then every metric name
in deploy/prometheus/alerts.yml and deploy/grafana/dashboards/veil.json must be among what the
server exports (or come from one of the other exporters prometheus.yml scrapes), and every label
they match on must exist.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.databases import server_url, with_database
from tests.support.messaging import envelope, group, send
from tests.support.promql import SCRAPE_CONFIG, all_expressions, matchers, metric_names
from tests.support.server import LiveServer, start_server
from tests.support.users import PASSWORD, bearer, login, new_email, register
from tests.support.ws import messages, registered, ws_connect
from veil.core.blobstore import BlobStore
from veil.core.clock import SystemClock
from veil.core.config import Settings
from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.devstack.tls import DevCertificates
from veil.maintenance import _LOCK_ID as MAINTENANCE_LOCK_ID
from veil.maintenance import Maintenance

TICKETS_PER_MINUTE = 2
# Metrics that come from elsewhere than Veil: Prometheus itself (`up`), and the scrape jobs of
# prometheus.yml that must exist for them.
OTHER_EXPORTERS = {"up": None, "probe_": "gateway-tls", "minio_": "minio"}
# Labels Prometheus adds to every series of a target (prometheus.yml).
TARGET_LABELS = {"job", "instance", "service"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: LiveServer) -> Samples:
    with server.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(step: tuple[Samples, Samples], name: str, **labels: str) -> float:
    before, after = step
    return value(after, name, **labels) - value(before, name, **labels)


def wait_for(server: LiveServer, name: str, expected: float, **labels: str) -> Samples:
    """Scrape until the sample has the expected value (the server processes a close after the
    client has seen it)."""
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(server)
        if value(samples, name, **labels) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


@pytest.fixture(scope="module")
def veil(
    settings: Settings,
    template_database: str,
    certificates: DevCertificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    name = f"veil_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server_url(settings))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    live = start_server(
        settings,
        with_database(server_url(settings), name),
        certificates,
        log_file=tmp_path_factory.mktemp("metrics") / "veil.log",
        extra_env={
            "VEIL_AUTH_RATE": "10000",
            "VEIL_AUTH_BURST": "10000",
            "VEIL_WS_TICKETS_PER_MINUTE": str(TICKETS_PER_MINUTE),
        },
    )
    try:
        yield live
    finally:
        live.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def steps(veil: LiveServer) -> dict[str, tuple[Samples, Samples]]:
    """The scenario, with /metrics before and after each step."""
    recorded: dict[str, tuple[Samples, Samples]] = {}
    with veil.client() as client:
        before = scrape(veil)
        alice, bob = login(client, register(client)), login(client, register(client))
        recorded["signup"] = (before, scrape(veil))

        before = scrape(veil)
        wrong = client.post("/v1/auth/login", json={"email": new_email(), "password": PASSWORD})
        assert wrong.status_code == 401
        email = register(client)
        wrong = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD + "!"})
        assert wrong.status_code == 401
        recorded["failed_logins"] = (before, scrape(veil))

        conversation = group(client, alice, bob)

        async def socket() -> None:
            before = scrape(veil)
            async with ws_connect(veil, bob) as ws:
                await registered(ws)
                recorded["opened"] = (before, scrape(veil))
                # The first message may be read by the socket's first pass (a replay); once it is
                # in, the next one can only come live.
                send(client, alice, conversation["conversation_id"], envelope(conversation["epoch"]))
                await messages(ws, 1)
                live = scrape(veil)
                send(client, alice, conversation["conversation_id"], envelope(conversation["epoch"]))
                await messages(ws, 1)
                recorded["delivered"] = (live, scrape(veil))

        asyncio.run(socket())
        closed = wait_for(veil, "veil_ws_connections", 0)
        recorded["closed"] = (recorded["delivered"][1], closed)

        before = scrape(veil)
        statuses = [
            client.post("/v1/ws/tickets", headers=bearer(alice)).status_code
            for _ in range(TICKETS_PER_MINUTE + 1)
        ]
        assert statuses == [201] * TICKETS_PER_MINUTE + [429]
        recorded["rate_limited"] = (before, scrape(veil))
    return recorded


def test_failed_logins_count_by_reason(steps: dict[str, tuple[Samples, Samples]]) -> None:
    failed = steps["failed_logins"]
    assert moved(failed, "veil_login_failures_total", reason="unknown_email") == 1
    assert moved(failed, "veil_login_failures_total", reason="wrong_password") == 1
    assert moved(steps["signup"], "veil_login_failures_total", reason="wrong_password") == 0


def test_a_websocket_moves_the_gauge_and_its_close_counts_by_reason(
    steps: dict[str, tuple[Samples, Samples]],
) -> None:
    assert moved(steps["opened"], "veil_ws_connections") == 1
    assert moved(steps["opened"], "veil_ws_handshakes_total", outcome="accepted") == 1
    assert moved(steps["closed"], "veil_ws_connections") == -1
    assert moved(steps["closed"], "veil_ws_disconnects_total", reason="client") == 1


def test_a_send_is_counted_and_its_live_delivery_timed(steps: dict[str, tuple[Samples, Samples]]) -> None:
    delivered = steps["delivered"]
    assert moved(delivered, "veil_messages_sent_total") == 1
    assert moved(delivered, "veil_ws_deliveries_total", frame="message") == 1
    assert moved(delivered, "veil_ws_delivery_lag_seconds_count") == 1
    lag = moved(delivered, "veil_ws_delivery_lag_seconds_sum")
    assert 0 <= lag < 5


def test_a_429_counts_as_a_rejection_of_its_budget(steps: dict[str, tuple[Samples, Samples]]) -> None:
    limited = steps["rate_limited"]
    assert moved(limited, "veil_rate_limit_rejections_total", limit="ws-ticket") == 1
    assert (
        moved(limited, "veil_http_requests_total", method="POST", route="/v1/ws/tickets", status="429") == 1
    )


def test_every_metric_the_alerts_and_the_dashboard_use_is_exported(
    veil: LiveServer, steps: dict[str, tuple[Samples, Samples]]
) -> None:
    exported = steps["rate_limited"][1]
    labels_of: dict[str, set[str]] = {}
    for name, labels in exported:
        labels_of.setdefault(name, set()).update(label for label, _ in labels)
    jobs = {job["job_name"] for job in yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]}
    with veil.client() as client:
        routes = set(client.get("/v1/openapi.json").json()["paths"])

    missing, foreign = set(), set()
    for expr in all_expressions():
        for name in metric_names(expr):
            exporter = next((prefix for prefix in OTHER_EXPORTERS if name.startswith(prefix)), None)
            if exporter is not None:
                job = OTHER_EXPORTERS[exporter]
                if job is not None and job not in jobs:
                    foreign.add((name, job))
            elif name not in labels_of:
                missing.add(name)
        for matcher in matchers(expr):
            if matcher.metric not in labels_of:
                continue
            assert matcher.label in labels_of[matcher.metric] | TARGET_LABELS, (matcher, expr)
            if matcher.label == "route":
                pattern = re.escape(matcher.value) if matcher.operator == "=" else matcher.value
                assert any(re.fullmatch(pattern, route) for route in routes), (matcher, expr)
    assert not missing, f"used in deploy/ but not exported by Veil: {sorted(missing)}"
    assert not foreign, f"no scrape job in prometheus.yml for: {sorted(foreign)}"


async def test_a_maintenance_round_counts_its_tasks_and_the_queues(
    database_url: str, blobs: BlobStore
) -> None:
    metrics = Metrics()
    db = Database(database_url, max_size=4, timeout=5, metrics=metrics)
    await db.open()
    try:
        maintenance = Maintenance(db, blobs, SystemClock(), metrics=metrics)
        other_process = await asyncpg.connect(database_url)
        try:
            async with other_process.transaction():  # another process's round holds the lock
                await other_process.execute("SELECT pg_advisory_xact_lock($1)", MAINTENANCE_LOCK_ID)
                skipped = await maintenance.run_once()
        finally:
            await other_process.close()
        ran = await maintenance.run_once()
        await maintenance.count_queues()
    finally:
        await db.close()

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert skipped is None and ran is not None
    assert sample("veil_maintenance_runs_total", task="housekeeping", outcome="ok") == 1
    assert sample("veil_maintenance_runs_total", task="housekeeping", outcome="skipped") == 1
    for task in ("account_purge", "attachment_sweep", "export_archive_sweep"):
        assert sample("veil_maintenance_runs_total", task=task, outcome="ok") == 1
        assert sample("veil_maintenance_runs_total", task=task, outcome="failed") == 0
    last = sample("veil_maintenance_last_success_timestamp_seconds", task="housekeeping")
    assert last is not None and abs(last - time.time()) < 60
    assert sample("veil_device_messages_queued") == 0
    assert sample("veil_export_jobs_queued") == 0
    assert sample("veil_db_pool_max_connections") == 4
    assert sample("veil_db_pool_connections_in_use") == 0
