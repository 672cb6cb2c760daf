"""Shared fixtures: one private PostgreSQL + S3 stack per test run, a fresh database per test, and
live Veil server processes.

The stack lives under `VEIL_TEST_DATA_DIR` (default `.data-test`), so `make test` never touches
what `make run` uses under `.data`. If `DATABASE_URL` / `S3_ENDPOINT` are set, those servers are
used instead and nothing is started.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.databases import server_url, with_database
from tests.support.server import LiveServer, start_server
from tests.support.stackdir import test_data_dir
from veil.core.blobstore import BlobStore
from veil.core.config import Environment, Settings
from veil.core.listener import Notifications
from veil.core.migrations import apply_migrations
from veil.devstack.stack import DevStack, start_dev_stack
from veil.devstack.tls import DevCertificates, ensure_dev_certificates

TEMPLATE_DB = "veil_test_template"


def _test_settings() -> Settings:
    return Settings(environment=Environment.TEST, data_dir=test_data_dir())


@pytest.fixture(scope="session")
def stack() -> Iterator[DevStack]:
    dev_stack = asyncio.run(start_dev_stack(_test_settings()))
    try:
        yield dev_stack
    finally:
        dev_stack.stop()


@pytest.fixture(scope="session")
def settings(stack: DevStack) -> Settings:
    return stack.settings


@pytest.fixture(scope="session")
def certificates(settings: Settings) -> DevCertificates:
    return ensure_dev_certificates(settings.data_dir)


@pytest.fixture(scope="session")
def template_database(settings: Settings) -> str:
    """A database migrated once; every test database is a copy of it."""

    async def build() -> None:
        admin = await asyncpg.connect(server_url(settings))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await admin.close()
        await apply_migrations(with_database(server_url(settings), TEMPLATE_DB))

    asyncio.run(build())
    return TEMPLATE_DB


@pytest.fixture
def database_url(settings: Settings, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    name = f"veil_test_{uuid.uuid4().hex[:12]}"
    server = server_url(settings)

    async def create() -> None:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        finally:
            await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    try:
        yield with_database(server, name)
    finally:
        asyncio.run(drop())


@pytest.fixture
async def notifications(database_url: str) -> AsyncIterator[Notifications]:
    """A process's LISTEN connection to the test's database, running."""
    shared = Notifications(database_url)
    shared.start()
    try:
        yield shared
    finally:
        await shared.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def blobs(settings: Settings) -> Iterator[BlobStore]:
    """The test stack's object store, as the server sees it."""
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    store = BlobStore(
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        timeout=5,
    )
    try:
        yield store
    finally:
        store.close()


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def make_server(
    settings: Settings, database_url: str, certificates: DevCertificates, tmp_path: Path
) -> Iterator[ServerFactory]:
    """Start `veil serve all` processes over TLS on free ports, sharing this test's database.
    Keyword arguments become environment variables (`VEIL_AUTH_RATE="1000"`)."""
    started: list[LiveServer] = []

    def make(**env: str) -> LiveServer:
        log_file = tmp_path / f"veil-{len(started)}.log"
        live = start_server(settings, database_url, certificates, log_file=log_file, extra_env=env)
        started.append(live)
        return live

    try:
        yield make
    finally:
        for live in started:
            live.stop()


@pytest.fixture
def server(make_server: ServerFactory) -> LiveServer:
    """A server with the production rate limits."""
    return make_server()


@pytest.fixture
def api(make_server: ServerFactory) -> LiveServer:
    """A server whose per-IP auth limit is out of the way of functional tests."""
    return make_server(VEIL_AUTH_RATE="10000", VEIL_AUTH_BURST="10000")


_RANDOM_LOOKING = re.compile(r"^[A-Za-z0-9+/=_-]{16,}$")


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Stable ids for parameters made of random bytes (base64 of `os.urandom`), so that every
    pytest-xdist worker collects the same tests."""
    if isinstance(val, str) and _RANDOM_LOOKING.match(val):
        return f"{argname}-{len(val)}-chars"
    return None
