"""The private development servers: embedded PostgreSQL and SeaweedFS S3 (veil.devstack).

These start real servers in temporary directories and check what matters to the rest of
the project: they answer, they are private (Unix socket only / loopback only, SigV4
enforced), two of each run side by side, and stop() leaves nothing behind.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from mypy_boto3_s3 import S3Client

from veil.devstack.postgres import EmbeddedPostgres
from veil.devstack.s3 import EmbeddedS3

pytestmark = pytest.mark.slow

ACCESS_KEY = "veil-test-access"
SECRET_KEY = "veil-test-secret-0123456789abcdef"
BUCKET = "veil-test"


# -- helpers -------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _ss(args: str) -> list[str]:
    result = subprocess.run(["ss", "-H", *args.split()], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def inet_listeners(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of every TCP/UDP socket ``pid`` listens on."""
    found = []
    for line in _ss("-ltunp"):
        if f"pid={pid}," not in line:
            continue
        fields = line.split()
        address, _, port = fields[4].rpartition(":")
        found.append((fields[0], address, int(port)))
    return found


def unix_listeners(pid: int) -> list[str]:
    """Paths of the Unix sockets ``pid`` listens on."""
    return [line.split()[4] for line in _ss("-lxp") if f"pid={pid}," in line]


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def processes_mentioning(path: Path) -> list[int]:
    """Live processes whose command line mentions ``path`` (e.g. a data directory)."""
    needle = os.fsencode(path)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and not process_gone(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def grpc_sockets(ports: dict[str, int]) -> set[str]:
    """The gRPC sockets weed hard-codes in /tmp, for this instance's ports."""
    services = ("master", "volume", "filer", "s3", "admin")
    return {f"/tmp/seaweedfs-{s}-grpc-{ports[f'{s}_grpc']}.sock" for s in services}


def s3_client(s3: EmbeddedS3, secret_key: str | None = None) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=secret_key or s3.secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def keys_in(client: S3Client, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def anonymous_status(s3: EmbeddedS3, method: str, path: str, body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", s3.ports["s3"], timeout=5)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def read_when_ready(server: EmbeddedS3, key: str, timeout: float = 15) -> bytes:
    """An object's bytes, retrying SeaweedFS's "internal error, please try again" while its volume
    server registers after a restart (seen on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            body: bytes = s3_client(server).get_object(Bucket=BUCKET, Key=key)["Body"].read()
            return body
        except ClientError as error:
            if error.response["Error"]["Code"] != "InternalError" or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def assert_s3_fully_stopped(s3: EmbeddedS3, pid: int, ports: dict[str, int]) -> None:
    assert process_gone(pid)
    assert s3.pid is None
    assert not s3.pid_file.exists()
    assert processes_mentioning(s3.data_dir) == []

    def still_listening() -> list[str]:
        return [line for line in _ss("-ltnp") if int(line.split()[3].rpartition(":")[2]) in ports.values()]

    # A killed multi-threaded process shows as gone (its leader is reaped) while its other threads
    # may still be closing the shared sockets on a busy machine: give the kernel a moment.
    assert wait_for(lambda: still_listening() == [], 10), still_listening()
    assert not any(Path(p).exists() for p in grpc_sockets(ports))
    assert not (s3.data_dir / "run" / "filer.sock").exists()
    assert not (s3.data_dir / "run" / "s3.sock").exists()


def assert_pg_fully_stopped(pg: EmbeddedPostgres, pid: int, socket_dir: str) -> None:
    assert pg.pid is None
    assert wait_for(lambda: process_gone(pid), 5)
    assert processes_mentioning(pg.data_dir) == []
    assert not (Path(socket_dir) / ".s.PGSQL.5432").exists()
    if not socket_dir.startswith(str(pg.data_dir)):
        assert not Path(socket_dir).exists()  # fallback socket directory removed


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "postgres")
    server.start()
    yield server
    pid, socket_dir = server.pid, str(server.data_dir / "run")
    server.stop()
    assert pid is not None
    assert_pg_fully_stopped(server, pid, socket_dir)


async def fetchval(url: str, query: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_pg_answers_select_1(pg: EmbeddedPostgres) -> None:
    url = pg.start()  # already running: returns the same URL
    assert url == pg.url()
    assert url.startswith("postgresql://postgres@/postgres?host=")
    assert await fetchval(url, "select 1") == 1
    assert await fetchval(url, "show max_connections") == "200"
    assert await fetchval(url, "show server_encoding") == "UTF8"
    assert str(await fetchval(url, "show server_version")).startswith("18")


def test_pg_listens_only_on_its_unix_socket(pg: EmbeddedPostgres) -> None:
    assert pg.pid is not None
    assert inet_listeners(pg.pid) == []
    assert unix_listeners(pg.pid) == [str(pg.data_dir / "run" / ".s.PGSQL.5432")]
    assert (pg.data_dir / "postgres.log").stat().st_size > 0


def test_pg_start_is_idempotent(pg: EmbeddedPostgres) -> None:
    pid, url = pg.pid, pg.url()
    assert pg.start() == url
    assert pg.pid == pid


async def test_pg_restart_immediate_keeps_committed_data(pg: EmbeddedPostgres) -> None:
    url = pg.url()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("create table if not exists crash_probe (v int)")
        await conn.execute("insert into crash_probe values (42)")
    finally:
        await conn.close()
    old_pid = pg.pid
    pg.restart()  # pg_ctl restart -m immediate: crash recovery on the way up
    assert pg.pid is not None
    assert pg.pid != old_pid
    assert old_pid is not None
    assert process_gone(old_pid)
    assert await fetchval(url, "select max(v) from crash_probe") == 42


async def test_pg_second_instance_with_long_path_runs_side_by_side(
    pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    # A data dir so deep that <data_dir>/run/.s.PGSQL.5432 exceeds the socket path limit.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    other = EmbeddedPostgres(deep)
    url = other.start()
    pid = other.pid
    try:
        assert pid is not None
        assert pid != pg.pid
        socket_dir = url.split("host=", 1)[1].split("&", 1)[0]
        assert not socket_dir.startswith(str(deep))  # fell back to a short directory
        assert len(socket_dir) < 60
        assert await fetchval(url, "select 1") == 1
        assert await fetchval(pg.url(), "select 1") == 1
    finally:
        other.stop()
    assert_pg_fully_stopped(other, pid, socket_dir)
    other.stop()  # no-op when stopped


# -- S3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    server = EmbeddedS3(tmp_path_factory.mktemp("s3") / "s3a", ACCESS_KEY, SECRET_KEY, BUCKET)
    server.start()
    yield server
    pid, ports = server.pid, server.ports
    server.stop()
    assert pid is not None
    assert_s3_fully_stopped(server, pid, ports)


def test_s3_put_get(s3: EmbeddedS3) -> None:
    client = s3_client(s3)
    client.head_bucket(Bucket=BUCKET)
    payload = b"sealed envelope \x00\x01\x02"
    client.put_object(Bucket=BUCKET, Key="dir/blob.bin", Body=payload)
    assert client.get_object(Bucket=BUCKET, Key="dir/blob.bin")["Body"].read() == payload


def test_s3_refuses_bad_signature_and_anonymous_requests(s3: EmbeddedS3) -> None:
    wrong = s3_client(s3, secret_key="not-the-secret-key-at-all")
    with pytest.raises(ClientError) as refused:
        wrong.put_object(Bucket=BUCKET, Key="forged.txt", Body=b"x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError):
        wrong.head_bucket(Bucket=BUCKET)

    assert anonymous_status(s3, "GET", f"/{BUCKET}") == 403
    assert anonymous_status(s3, "GET", f"/{BUCKET}/dir/blob.bin") == 403
    assert anonymous_status(s3, "PUT", f"/{BUCKET}/anon.txt", b"x") == 403
    assert "forged.txt" not in keys_in(s3_client(s3), BUCKET)


def test_s3_listens_only_on_loopback_and_its_ports(s3: EmbeddedS3) -> None:
    pid = s3.pid
    assert pid is not None
    ports = s3.ports
    assert len(set(ports.values())) == 10
    # The admin server comes up last, shortly after S3; wait for all ten.
    assert wait_for(lambda: {p for _, _, p in inet_listeners(pid)} == set(ports.values()))
    for proto, address, _ in inet_listeners(pid):
        assert proto == "tcp"
        assert address == "127.0.0.1"
    allowed = grpc_sockets(ports) | {str(s3.data_dir / "run" / n) for n in ("filer.sock", "s3.sock")}
    assert set(unix_listeners(pid)) <= allowed
    # In /tmp, only the gRPC sockets weed hard-codes (no filer/S3 local sockets there).
    ours = {
        str(p)
        for p in Path("/tmp").glob("seaweedfs-*.sock")
        if any(p.name.endswith(f"-{port}.sock") for port in ports.values())
    }
    assert ours <= grpc_sockets(ports)
    # No glog files in /tmp (weed logs to weed.log with -logtostderr).
    assert not [p for p in Path("/tmp").glob("weed.*") if p.name.endswith(f".{pid}")]
    assert "S3 API Server" in (s3.data_dir / "weed.log").read_text()


def test_s3_start_is_idempotent(s3: EmbeddedS3) -> None:
    pid, endpoint = s3.pid, s3.endpoint
    assert s3.start() == endpoint
    assert s3.pid == pid


def test_s3_second_instance_runs_side_by_side(s3: EmbeddedS3, tmp_path: Path) -> None:
    other = EmbeddedS3(tmp_path / "s3b", "other-access", "other-secret-0123456789", "other")
    endpoint = other.start()
    pid, ports = other.pid, other.ports
    try:
        assert pid is not None
        assert pid != s3.pid
        assert endpoint != s3.endpoint
        assert set(ports.values()).isdisjoint(s3.ports.values())
        s3_client(other).put_object(Bucket="other", Key="only-here", Body=b"b")
        assert keys_in(s3_client(other), "other") == ["only-here"]
        with pytest.raises(ClientError):
            s3_client(s3).head_bucket(Bucket="other")
        # Credentials are per instance.
        with pytest.raises(ClientError):
            s3_client(s3, secret_key=other.secret_key).head_bucket(Bucket=BUCKET)
    finally:
        other.stop()
    assert_s3_fully_stopped(other, pid, ports)
    s3_client(s3).head_bucket(Bucket=BUCKET)  # the first one is unaffected
    other.stop()  # no-op when stopped


def test_s3_restart_reuses_free_ports_and_replaces_taken_ones(tmp_path: Path) -> None:
    server = EmbeddedS3(tmp_path / "s3c", ACCESS_KEY, SECRET_KEY, BUCKET)
    server.start()
    first = server.ports
    s3_client(server).put_object(Bucket=BUCKET, Key="kept", Body=b"k")
    server.stop()

    server.start()
    try:
        assert server.ports == first
        assert read_when_ready(server, "kept") == b"k"
    finally:
        server.stop()

    # Someone else takes the S3 port while we are down: only that port changes.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # port may be in TIME_WAIT
        squatter.bind(("127.0.0.1", first["s3"]))
        squatter.listen()
        server.start()
        try:
            second = server.ports
            assert second["s3"] != first["s3"]
            assert {k: v for k, v in second.items() if k != "s3"} == {
                k: v for k, v in first.items() if k != "s3"
            }
            assert server.endpoint.endswith(f":{second['s3']}")
            assert read_when_ready(server, "kept") == b"k"
        finally:
            pid = server.pid
            server.stop()
    assert pid is not None
    assert_s3_fully_stopped(server, pid, second)


def test_s3_recovers_from_sigkill(tmp_path: Path) -> None:
    server = EmbeddedS3(tmp_path / "s3d", ACCESS_KEY, SECRET_KEY, BUCKET)
    server.start()
    pid, ports = server.pid, server.ports
    assert pid is not None
    assert wait_for(lambda: all(Path(p).exists() for p in grpc_sockets(ports)))
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: server.pid is None, 5)
    assert all(Path(p).exists() for p in grpc_sockets(ports))  # left behind by SIGKILL
    server.stop()  # not running: just cleans up
    assert_s3_fully_stopped(server, pid, ports)

    server.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.endpoint)
        s3_client(server).head_bucket(Bucket=BUCKET)
    finally:
        new_pid = server.pid
        server.stop()
    assert new_pid is not None
    assert_s3_fully_stopped(server, new_pid, server.ports)
