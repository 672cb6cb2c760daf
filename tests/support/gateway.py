"""The nginx gateway of deploy/nginx in front of service processes, for the topology tests.

The template is the one production uses; here its placeholders point at service processes on
loopback ports, and a minimal main configuration keeps every nginx file under one directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

import httpx

from tests.support.server import LiveServer

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "veil.conf.template"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()), None
    )


def upstreams(servers: list[LiveServer]) -> str:
    return " ".join(f"server 127.0.0.1:{server.port} max_fails=1 fail_timeout=2s;" for server in servers)


def render(values: dict[str, str]) -> str:
    """Fill the template's ${VEIL_...} placeholders; nginx's own $variables are left alone."""
    text = TEMPLATE.read_text()
    rendered = Template(text).safe_substitute(values)
    assert "${VEIL_" not in rendered, "a placeholder of the template was not given a value"
    return rendered


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_gateway(binary: str, directory: Path, port: int, values: dict[str, str]) -> Gateway:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "veil.conf").write_text(render({"VEIL_GATEWAY_LISTEN": f"127.0.0.1:{port}", **values}))
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    user = "user root root;" if os.geteuid() == 0 else ""  # workers must reach the temp directories
    (directory / "nginx.conf").write_text(
        f"""{user}
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {directory}/veil.conf;
}}
"""
    )
    checked = subprocess.run(
        [binary, "-t", "-p", str(directory), "-c", str(directory / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refused the configuration:\n{checked.stderr}")
    process = subprocess.Popen(
        [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = Gateway(process, port, directory)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return gateway
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                gateway.stop()
                raise RuntimeError(f"nginx did not start:\n{gateway.error_log()}") from None
            time.sleep(0.05)


@dataclass
class Topology:
    gateway: Gateway
    services: dict[str, list[LiveServer]]
    ca_file: Path
    database_url: str

    def client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.gateway.base_url, verify=context, timeout=10)

    def async_client(self) -> httpx.AsyncClient:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.AsyncClient(base_url=self.gateway.base_url, verify=context, timeout=10)
