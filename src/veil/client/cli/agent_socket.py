"""Talking to a profile's unlock agent (`veil-client unlock`, docs/adr/0022) over its Unix socket.

The agent listens on `agent.sock` in the profile directory (0700; the socket itself 0600) and
answers one request per connection, each a line:

    key\\n    ->  key <base64 of KeystoreKey.encode()>\\n   the key store's derived key
    lock\\n   ->  locked\\n                                  the agent forgets the key and exits

Both ends check the other's user id (SO_PEERCRED): the agent answers only processes of its own user,
and a command takes a key only from an agent of its own user. A socket nobody listens on is what a
dead agent left behind: it is removed, and the command goes on as if there were no agent.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import socket
import stat
import struct
from pathlib import Path

from veil.client.protocol.errors import KeystoreFormatError
from veil.client.sdk.keystore import KeystoreKey

SOCKET_NAME = "agent.sock"
KEY_REQUEST = b"key\n"
LOCK_REQUEST = b"lock\n"
LOCKED_ANSWER = b"locked\n"
KEY_ANSWER_PREFIX = b"key "
MAX_LINE = 256  # longer than any request or answer: more is a peer that is not speaking this protocol
ANSWER_SECONDS = 2.0
_PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def socket_path(profile_directory: Path) -> Path:
    return profile_directory / SOCKET_NAME


def supported() -> bool:
    """The agent needs to learn who is asking; SO_PEERCRED is Linux's way (the project's target)."""
    return hasattr(socket, "AF_UNIX") and hasattr(socket, "SO_PEERCRED")


def peer_uid(connection: socket.socket) -> int:
    """The user id of the process at the other end of a connected Unix socket."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size)
    return int(_PEER_CREDENTIALS.unpack(raw)[1])


def read_line(connection: socket.socket) -> bytes:
    """One line (up to MAX_LINE bytes, newline included); b"" if the peer sent none in time."""
    received = b""
    while not received.endswith(b"\n") and len(received) < MAX_LINE:
        try:
            chunk = connection.recv(MAX_LINE - len(received))
        except (TimeoutError, OSError):
            return b""
        if not chunk:
            break
        received += chunk
    return received if received.endswith(b"\n") else b""


def key_answer(key: KeystoreKey) -> bytes:
    return KEY_ANSWER_PREFIX + base64.b64encode(key.encode()) + b"\n"


def request_key(path: Path) -> KeystoreKey | None:
    """The key the agent at `path` holds; None when no agent answers (a stale socket is removed)."""
    answer = _request(path, KEY_REQUEST)
    if answer is None or not answer.startswith(KEY_ANSWER_PREFIX):
        return None
    try:
        return KeystoreKey.decode(base64.b64decode(answer[len(KEY_ANSWER_PREFIX) :].strip(), validate=True))
    except (binascii.Error, KeystoreFormatError):
        return None


def request_lock(path: Path) -> bool:
    """Ask the agent at `path` to forget its key and exit; whether one was running and did."""
    return _request(path, LOCK_REQUEST) == LOCKED_ANSWER


def _request(path: Path, request: bytes) -> bytes | None:
    if not supported():
        return None
    try:
        found = path.lstat()
    except OSError:  # none there (or the profile directory cannot be read): no agent
        return None
    if not stat.S_ISSOCK(found.st_mode):
        return None
    seen = found.st_ino
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(ANSWER_SECONDS)
        try:
            connection.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            # Nobody listens: an agent that died without cleaning up. A live agent's socket only
            # appears once it listens, so this is never one starting up; the inode check leaves
            # alone one that replaced the dead socket meanwhile.
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_ino == seen:
                    path.unlink()
            return None
        except OSError:  # busy or unreachable: as if there were no agent
            return None
        try:
            if peer_uid(connection) != os.getuid():
                return None  # not our agent: take no key from it
            connection.sendall(request)
        except OSError:
            return None
        return read_line(connection) or None
