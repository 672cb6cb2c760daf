"""Running real Veil server processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from veil.core.config import Settings
from veil.devstack.tls import DevCertificates


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    log_file: Path
    _log: IO[bytes] = field(repr=False)
    # Plain HTTP: a service process behind the gateway.
    plain: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.plain else f"https://localhost:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.ssl_context(), timeout=10, **kwargs)  # type: ignore[arg-type]

    def async_client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, verify=self.ssl_context(), timeout=10, **kwargs)  # type: ignore[arg-type]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def logs(self) -> str:
        self._log.flush()
        return self.log_file.read_text(errors="replace")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def server_environment(
    settings: Settings, database_url: str, certificates: DevCertificates, port: int
) -> dict[str, str]:
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    ours = ("VEIL_", "S3_", "DATABASE_", "SMTP_", "MAIL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        VEIL_ENV="test",
        VEIL_PORT=str(port),
        VEIL_WORKERS="1",  # one process per server: a test starts more servers when it needs them
        VEIL_DATA_DIR=str(settings.data_dir),
        VEIL_TLS_CERT_FILE=str(certificates.cert_file),
        VEIL_TLS_KEY_FILE=str(certificates.key_file),
        VEIL_SHUTDOWN_TIMEOUT="10",
        VEIL_JWT_KEYS_FILE=str(settings.jwt_keys_file),
        DATABASE_URL=database_url,
        S3_ENDPOINT=settings.s3_endpoint,
        S3_ACCESS_KEY=settings.s3_access_key.get_secret_value(),
        S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
        S3_BUCKET=settings.s3_bucket,
        SMTP_HOST=settings.smtp_host or "",
        SMTP_PORT=str(settings.smtp_port),
    )
    return env


def start_server(
    settings: Settings,
    database_url: str,
    certificates: DevCertificates,
    *,
    log_file: Path,
    extra_env: dict[str, str] | None = None,
    service: str = "all",
    plain: bool = False,
) -> LiveServer:
    """Start `veil serve SERVICE` on a free port: over TLS, or `plain` HTTP (behind a gateway)."""
    port = free_port()
    env = server_environment(settings, database_url, certificates, port)
    if plain:
        del env["VEIL_TLS_CERT_FILE"], env["VEIL_TLS_KEY_FILE"]
    env.update(extra_env or {})
    log = log_file.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "veil", "--env-file", "/dev/null", "serve", service],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    live = LiveServer(process, port, certificates.ca_file, log_file, log, plain)
    deadline = time.monotonic() + 30
    with live.client() as client:
        while True:
            if process.poll() is not None:
                logs = live.logs()
                live.stop()
                raise RuntimeError(f"veil exited with {process.returncode}:\n{logs}")
            try:
                if client.get("/healthz").status_code == 200:
                    return live
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                logs = live.logs()
                live.stop()
                raise RuntimeError(f"veil did not become healthy:\n{logs}")
            time.sleep(0.1)
