"""The unlock agent's socket: it hands the key store's key to processes of its own user, cleans up
after itself and after a dead agent, and ends by itself (docs/adr/0022)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from veil.client.cli import agent, agent_socket
from veil.client.sdk.keystore import KeystoreKey, ScryptParams, save_state

FAST = ScryptParams(log2_n=10)


@pytest.fixture
def keystore(tmp_path: Path) -> tuple[Path, KeystoreKey]:
    path = tmp_path / "keystore.veilks"
    key = KeystoreKey.new("a passphrase", FAST)
    save_state(path, {"n": 1}, key)
    return path, key


class RunningAgent:
    def __init__(self, path: Path, keystore: Path, key: KeystoreKey, seconds: float) -> None:
        self.path = path
        self.ended: list[str] = []
        listener = agent.listen(path)
        self.thread = threading.Thread(
            target=lambda: self.ended.append(agent.serve(listener, path, keystore, key, seconds=seconds))
        )
        self.thread.start()

    def wait(self, seconds: float = 5.0) -> str:
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the agent did not end"
        return self.ended[0]


Start = Callable[..., RunningAgent]


@pytest.fixture
def start(tmp_path: Path, keystore: tuple[Path, KeystoreKey]) -> Iterator[Start]:
    """Starts an agent (in a thread of this process) on the profile directory `tmp_path`."""
    started: list[RunningAgent] = []

    def make(seconds: float = 30.0) -> RunningAgent:
        running = RunningAgent(agent_socket.socket_path(tmp_path), *keystore, seconds)
        started.append(running)
        return running

    yield make
    for running in started:  # whatever a failed test left running
        agent_socket.request_lock(running.path)
        running.thread.join(5)


def test_the_key_round_trips_and_lock_ends_the_agent(
    start: Start, keystore: tuple[Path, KeystoreKey]
) -> None:
    running = start()
    assert stat.S_IMODE(running.path.stat().st_mode) == 0o600
    assert agent_socket.request_key(running.path) == keystore[1]
    assert agent_socket.request_key(running.path) == keystore[1]  # as often as asked
    assert agent_socket.request_lock(running.path)
    assert running.wait() == "locked"
    assert not running.path.exists()
    assert agent_socket.request_key(running.path) is None


def test_it_expires(start: Start) -> None:
    began = time.monotonic()
    running = start(seconds=0.5)
    assert agent_socket.request_key(running.path) is not None
    assert running.wait() == "expired"
    assert time.monotonic() - began < 3
    assert not running.path.exists()


def test_it_ends_when_the_key_store_goes_or_changes_key(
    start: Start, keystore: tuple[Path, KeystoreKey]
) -> None:
    path, _ = keystore
    running = start()
    save_state(path, {"n": 2}, KeystoreKey.new("a new passphrase", FAST))  # a new salt
    assert running.wait() == "the key store is gone or was re-encrypted"
    save_state(path, {"n": 3}, keystore[1])
    running = start()
    path.unlink()
    assert running.wait() == "the key store is gone or was re-encrypted"
    assert not running.path.exists()


def test_a_dead_agents_socket_is_removed_and_ignored(tmp_path: Path) -> None:
    path = agent_socket.socket_path(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # closed without unlinking, as a killed agent leaves it
    assert path.is_socket()
    assert agent_socket.request_key(path) is None
    assert not path.exists()
    assert not agent_socket.request_lock(path)


def test_a_peer_that_does_not_speak_the_protocol_gets_nothing(
    start: Start, keystore: tuple[Path, KeystoreKey]
) -> None:
    running = start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.connect(str(running.path))
        peer.sendall(b"x" * 1000)
        peer.settimeout(5)
        try:
            answer = peer.recv(100)
        except ConnectionResetError:  # hung up on with the rest of the junk unread
            answer = b""
        assert answer == b""  # no key
    assert agent_socket.request_key(running.path) == keystore[1]  # and the agent still serves


# Another user may not be able to run this test's interpreter (a virtualenv under /root): the
# system's will do, as the asking side needs the standard library only.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to ask as another user id")
def test_another_user_gets_no_key_even_through_an_open_socket(keystore: tuple[Path, KeystoreKey]) -> None:
    """SO_PEERCRED, not only the file mode: with the socket opened to everyone, another user's
    process is still refused."""
    directory = Path(tempfile.mkdtemp(prefix="veil-agent-"))
    try:
        directory.chmod(0o755)
        running = RunningAgent(directory / "agent.sock", *keystore, seconds=30)
        running.path.chmod(0o666)
        ask = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.connect(sys.argv[1]); s.settimeout(5)\n"
            # The agent may hang up before the request is even sent: a refusal too.
            "try:\n    s.sendall(b'key\\n'); answer = s.recv(200)\n"
            "except (BrokenPipeError, ConnectionResetError):\n    answer = b''\n"
            "print('given a key' if answer.startswith(b'key ') else 'refused')\n"
        )
        nobody = 65534
        answer = subprocess.run(
            [SYSTEM_PYTHON, "-c", ask, str(running.path)],
            user=nobody,
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
        )
        assert answer.stdout.strip() == "refused", answer.stderr
        assert agent_socket.request_key(running.path) == keystore[1]
        assert agent_socket.request_lock(running.path)
        running.wait()
    finally:
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()
