"""Several processes serving one port: `VEIL_WORKERS` (unset: one per core).

Each worker is a whole Veil process (its own pools, listeners and caches), started with the spawn
method and binding the port with SO_REUSEPORT, so the kernel spreads connections across them. They
share nothing but PostgreSQL and the object store, exactly as separate processes behind the gateway
do (maintenance takes an advisory lock, deliveries travel by NOTIFY, limits live in PostgreSQL).

The supervisor, the process that was started, keeps the port bound without listening (so the port
stays ours while a worker restarts: the kernel gives connections only to listening sockets),
passes SIGTERM and SIGINT on (each worker drains as a lone process does), restarts a worker that
dies, and stops everything if workers keep dying just after they start. Workers run in their own
process group, so a terminal's Ctrl-C reaches them once, through the supervisor, and they end with
it if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from veil.core.config import Settings
from veil.core.logging import configure_logging, get_logger

log = get_logger(__name__)

# A worker that dies sooner than this after its start counts towards giving up.
_EARLY_DEATH_SECONDS = 10.0
_EARLY_DEATHS_ALLOWED = 3
_PR_SET_PDEATHSIG = 1


def serve(settings: Settings, service: str, *, cert_file: Path | None, key_file: Path | None) -> int:
    """Serve `service` ("all" or one service) until SIGTERM/SIGINT; the exit status."""
    if settings.worker_count == 1:
        _serve_here(settings, service, cert_file, key_file, sockets=None)
        return 0
    return _Supervisor(settings, service, cert_file, key_file).run()


def _serve_here(
    settings: Settings,
    service: str,
    cert_file: Path | None,
    key_file: Path | None,
    sockets: list[socket.socket] | None,
) -> None:
    from veil import server
    from veil.gateway.app import create_service_app

    server.run(
        create_service_app(settings, service),
        settings,
        cert_file=cert_file,
        key_file=key_file,
        sockets=sockets,
    )


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to the address with SO_REUSEPORT (not yet listening)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.set_inheritable(False)
    return sock


def _worker(
    settings: Settings, service: str, cert_file: Path | None, key_file: Path | None, supervisor: int
) -> None:
    """A worker process's whole life (the spawn method's target: module level, picklable args)."""
    os.setpgrp()
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # the supervisor died before the line above
        return
    configure_logging(settings.log_level, log_format=settings.log_format)
    sock = _bind(settings.host, settings.port)
    _serve_here(settings, service, cert_file, key_file, sockets=[sock])


class _Supervisor:
    def __init__(
        self, settings: Settings, service: str, cert_file: Path | None, key_file: Path | None
    ) -> None:
        self._settings = settings
        self._service = service
        self._files = (cert_file, key_file)
        self._spawn = multiprocessing.get_context("spawn")
        self._stopping = False
        self._workers: list[tuple[BaseProcess, float]] = []

    def run(self) -> int:
        reservation = _bind(self._settings.host, self._settings.port)
        if self._settings.port == 0:  # every worker binds the port the reservation was given
            self._settings = self._settings.model_copy(update={"port": reservation.getsockname()[1]})
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._workers = [self._start() for _ in range(self._settings.worker_count)]
            log.info("workers_started", workers=len(self._workers), port=self._settings.port)
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            reservation.close()

    def _start(self) -> tuple[BaseProcess, float]:
        process = self._spawn.Process(
            target=_worker,
            args=(self._settings, self._service, *self._files, os.getpid()),
            name="veil-worker",
        )
        process.start()
        return process, time.monotonic()

    def _watch(self) -> int:
        early_deaths = 0
        while any(process.is_alive() for process, _ in self._workers):
            multiprocessing.connection.wait([p.sentinel for p, _ in self._workers], timeout=1.0)
            for index, (process, started) in enumerate(self._workers):
                if process.exitcode is None or self._stopping:
                    continue
                lived = time.monotonic() - started
                early_deaths = early_deaths + 1 if lived < _EARLY_DEATH_SECONDS else 0
                log.error("worker_died", exit_code=process.exitcode, lived_seconds=round(lived, 1))
                if early_deaths >= _EARLY_DEATHS_ALLOWED:
                    log.error("workers_keep_dying", deaths=early_deaths)
                    self._stop(signal.SIGTERM, None)
                    break
                self._workers[index] = self._start()
        return 0 if self._stopping and early_deaths < _EARLY_DEATHS_ALLOWED else 1

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        """Each worker drains and exits on its SIGTERM; the supervisor waits for all of them."""
        self._stopping = True
        for process, _ in self._workers:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)
