"""A development mail sink: a real SMTP server (aiosmtpd) on loopback that accepts every message
and writes it to `<directory>/<time>-<n>.eml` instead of delivering it.

`make run` starts one under `<data_dir>/mail` and prints where messages land; the tests read the
challenge codes from the files. It runs as its own process (`python -m veil.devstack.mailsink`),
started and stopped by PID like the other development servers.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_HOST = "127.0.0.1"


class _WriteToDirectory:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._counter = itertools.count()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.time_ns()}-{next(self._counter)}.eml"
        partial = self._directory / f".{name}.tmp"
        partial.write_bytes(envelope.original_content or envelope.content)
        partial.rename(self._directory / name)  # readers never see half a message
        return "250 Message accepted for delivery"


class MailSink:
    """The sink process for one data directory; `port` stays the same across restarts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        port_file = self.directory / "smtp.port"
        port = int(port_file.read_text()) if port_file.exists() else 0
        if not port or not _is_free(port):
            port = _free_port()
            port_file.write_text(str(port))
        log = (self.directory / "sink.log").open("ab")
        command = [sys.executable, "-m", "veil.devstack.mailsink", "--dir", str(self.directory)]
        self._process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not _accepts(port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the mail sink did not start; see {self.directory / 'sink.log'}")
            time.sleep(0.05)
        self.port = port
        return port

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> None:
    from aiosmtpd.controller import Controller

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    arguments.dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(_WriteToDirectory(arguments.dir), hostname=_HOST, port=arguments.port)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    controller.start()
    where = f"{_HOST}:{arguments.port}"
    print(f"mail sink on {where}, writing to {arguments.dir} (pid {os.getpid()})", flush=True)
    stopped.wait()
    controller.stop()


if __name__ == "__main__":
    main()
