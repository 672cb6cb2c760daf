"""The unlock agent: a background process holding one key store's derived key in memory for a while,
so that commands on the profile neither ask for the passphrase nor run Scrypt (docs/adr/0022).

`veil-client unlock` starts it as `python -m veil.client.cli.agent SOCKET KEYSTORE SECONDS` and
writes the key (base64 of `KeystoreKey.encode()`, one line) to its standard input, never to its
arguments or environment, which other processes can read. It answers on `SOCKET` as
`agent_socket` describes, and ends (removing its socket) when the first of these happens:

- SECONDS have passed;
- a `lock` request came;
- the key store is gone, or was re-encrypted under another salt (a new passphrase, a restored copy),
  so the key opens nothing any more;
- its socket was removed or replaced (no command can reach it);
- it is sent SIGTERM.

It holds the derived key, not the passphrase: the key opens this one key store only while its salt
stays, and the passphrase, which may be reused elsewhere, is never in the agent's memory.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from veil.client.cli import agent_socket
from veil.client.protocol.errors import KeystoreFormatError
from veil.client.sdk.keystore import KeystoreKey, file_stamp

READY = b"ready\n"
# How often the agent looks at the clock, the key store and its socket while nobody asks.
CHECK_SECONDS = 1.0
SOCKET_MODE = 0o600
_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def listen(path: Path) -> socket.socket:
    """A listening socket at `path`, mode 0600 from its creation on.

    It is bound under a temporary name and renamed into place once it listens, so a command never
    finds the socket before anyone answers on it (and takes it for a dead agent's)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous_umask = os.umask(0o177)  # the socket file is created 0600, not chmod-ed afterwards
    try:
        listener.bind(str(temporary))
    except OSError:
        listener.close()
        raise
    finally:
        os.umask(previous_umask)
    listener.listen(64)  # commands run in parallel (eight `send`s at once) wait their turn, not fail
    os.replace(temporary, path)
    return listener


def serve(
    listener: socket.socket,
    path: Path,
    keystore: Path,
    key: KeystoreKey,
    *,
    seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Answer requests on `listener` (bound at `path`) until one of the module's ends; returns which.
    The socket file is removed on the way out if it is still this agent's."""
    deadline = clock() + seconds
    own_socket = path.stat().st_ino
    try:
        while True:
            if (remaining := deadline - clock()) <= 0:
                return "expired"
            if not _opens(keystore, key):
                return "the key store is gone or was re-encrypted"
            if not _is_ours(path, own_socket):
                return "its socket was removed"
            listener.settimeout(min(CHECK_SECONDS, remaining))
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                if _answer(connection, key) == agent_socket.LOCK_REQUEST:
                    return "locked"
    finally:
        listener.close()
        if _is_ours(path, own_socket):
            path.unlink()


def _answer(connection: socket.socket, key: KeystoreKey) -> bytes:
    """Answer one request from a process of this user; returns the request (b"" if refused)."""
    connection.settimeout(agent_socket.ANSWER_SECONDS)
    if agent_socket.peer_uid(connection) != os.getuid():
        return b""
    request = agent_socket.read_line(connection)
    with contextlib.suppress(OSError):  # a peer that hung up does not end the agent
        if request == agent_socket.KEY_REQUEST:
            connection.sendall(agent_socket.key_answer(key))
        elif request == agent_socket.LOCK_REQUEST:
            connection.sendall(agent_socket.LOCKED_ANSWER)
    return request


def _opens(keystore: Path, key: KeystoreKey) -> bool:
    stamp = file_stamp(keystore)
    if stamp is None:
        return False
    try:
        return key.fits(stamp)
    except KeystoreFormatError:
        return False


def _is_ours(path: Path, inode: int) -> bool:
    try:
        return path.is_socket() and path.stat().st_ino == inode
    except OSError:
        return False


def refuse_inspection() -> None:
    """No core dump, and (Linux) no ptrace or /proc/PID/mem reading by other processes of this user,
    which would otherwise read the key out of memory without asking: what ssh-agent does too."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not agent_socket.supported():
        sys.stdout.buffer.write(b"error: usage: python -m veil.client.cli.agent SOCKET KEYSTORE SECONDS\n")
        return 2
    path, keystore, seconds = Path(argv[0]), Path(argv[1]), float(argv[2])
    refuse_inspection()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # detached: only `lock`, expiry or SIGTERM end it
    try:
        key = KeystoreKey.decode(base64.b64decode(sys.stdin.buffer.readline().strip(), validate=True))
        listener = listen(path)
    except (ValueError, KeystoreFormatError, OSError) as error:
        sys.stdout.buffer.write(f"error: {type(error).__name__}\n".encode())
        return 1
    sys.stdin.close()
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    sys.stdout.close()  # `unlock` reads one line, then leaves
    serve(listener, path, keystore, key, seconds=seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
