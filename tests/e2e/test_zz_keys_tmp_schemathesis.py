"""The whole published API, fuzzed by schemathesis from its own OpenAPI document with a valid
identity: no 5xx, and every response conforms to the documented schema and statuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.support.users import login, register

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_failures(make_server: ServerFactory) -> None:
    server = make_server(VEIL_RATE_LIMITS="off")
    with server.client() as client:
        pair = login(client, register(client))
    # Operations that would end the identity's own session run last, in a run of their own, so the
    # rest of the API is exercised while the token is valid.
    ending = "^/v1/(devices|keys|users)"
    base = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.base_url}/v1/openapi.json",
        "--checks",
        "all",
        "--tls-verify",
        str(server.ca_file),
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--no-color",
        "--request-timeout",
        "10",
        "-H",
        f"Authorization: Bearer {pair['access_token']}",
    ]
    for selection in (["--include-path-regex", ending],):
        result = subprocess.run(
            [*base, *selection], capture_output=True, text=True, timeout=600, cwd=CONFIG.parent
        )
        assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-2000:]
