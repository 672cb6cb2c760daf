"""`veil run` (what `make run` starts) beside the test stack: its own servers, ports and files; it
serves HTTPS with a generated CA, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port
from veil.devstack.postgres import EmbeddedPostgres
from veil.devstack.s3 import EmbeddedS3
from veil.devstack.stack import DevStack

pytestmark = pytest.mark.slow


def test_veil_run_side_by_side_with_the_test_stack(stack: DevStack, tmp_path: Path) -> None:
    data_dir = tmp_path / "run-data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "S3_", "DATABASE_"))}
    env.update(VEIL_DATA_DIR=str(data_dir), VEIL_PORT=str(port))
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "veil", "--env-file", "/dev/null", "run"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            ca = data_dir / "tls" / "ca.pem"
            if ca.exists():
                try:
                    ready = httpx.get(
                        f"https://localhost:{port}/readyz",
                        verify=ssl.create_default_context(cafile=str(ca)),
                        timeout=2,
                    )
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, (tmp_path / "run.log").read_text()
        assert ready.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"

        # The test stack is untouched and still serving.
        assert stack.postgres is not None and stack.postgres.pid is not None
        assert stack.s3 is not None and stack.s3.pid is not None
        assert stack.settings.s3_endpoint != f"http://127.0.0.1:{port}"

        output = (tmp_path / "run.log").read_text()
        assert f"https://localhost:{port}" in output
        assert str((data_dir / "tls" / "ca.pem").resolve()) in output

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    # Everything `veil run` started is gone.
    assert EmbeddedPostgres(data_dir / "postgres").pid is None
    assert EmbeddedS3(data_dir / "s3", "x", "y", "veil-attachments").pid is None
