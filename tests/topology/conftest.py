"""The production topology on one machine, shared by the topology and fault tests: the nginx
gateway of deploy/nginx in front of separate service processes (two copies each of auth and
messaging, one of keys, files and account) sharing one database and object store.

Needs nginx (`apt-get install nginx`). Without it these tests are skipped with a message, unless
VEIL_REQUIRE_NGINX=1 (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.support.databases import server_url, with_database
from tests.support.gateway import Topology, nginx_binary, start_gateway, upstreams
from tests.support.server import LiveServer, free_port, start_server
from veil.core.config import Settings
from veil.devstack.tls import DevCertificates

COPIES = {"auth": 2, "messaging": 2, "keys": 1, "files": 1, "account": 1}


@pytest.fixture(scope="module")
def topology(
    settings: Settings,
    template_database: str,
    certificates: DevCertificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Topology]:
    binary = nginx_binary()
    if binary is None:
        message = "nginx is not installed (apt-get install nginx); the topology tests need it"
        if os.environ.get("VEIL_REQUIRE_NGINX") == "1":
            pytest.fail(message)
        pytest.skip(message)
    name = f"veil_topology_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(server_url(settings), name, template_database))
    database_url = with_database(server_url(settings), name)
    directory = tmp_path_factory.mktemp("topology")
    services: dict[str, list[LiveServer]] = {}
    gateway = None
    env = {
        "VEIL_TRUSTED_PROXIES": "127.0.0.1/32",
        # The per-IP auth limit, enforced by the services with state shared in PostgreSQL.
        "VEIL_AUTH_RATE": "5",
        "VEIL_AUTH_BURST": "10",
        "VEIL_MESSAGES_PER_MINUTE": "100000",
    }
    try:
        for service, count in COPIES.items():
            services[service] = [
                start_server(
                    settings,
                    database_url,
                    certificates,
                    log_file=directory / f"{service}-{copy}.log",
                    extra_env=env,
                    service=service,
                    plain=True,
                )
                for copy in range(count)
            ]
        gateway = start_gateway(
            binary,
            directory / "nginx",
            free_port(),
            {
                "VEIL_GATEWAY_CERT": str(certificates.cert_file),
                "VEIL_GATEWAY_KEY": str(certificates.key_file),
                # High here, so the tests below see the services' own (shared) limit.
                "VEIL_GATEWAY_AUTH_RATE": "1000",
                "VEIL_GATEWAY_AUTH_BURST": "1000",
                **{f"VEIL_UPSTREAM_{name.upper()}": upstreams(copies) for name, copies in services.items()},
            },
        )
        yield Topology(gateway, services, certificates.ca_file, database_url)
    finally:
        if gateway is not None:
            gateway.stop()
        for copies in services.values():
            for live in copies:
                live.stop()
        asyncio.run(_drop_database(server_url(settings), name))


async def _create_database(server: str, name: str, template: str) -> None:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()


async def _drop_database(server: str, name: str) -> None:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
