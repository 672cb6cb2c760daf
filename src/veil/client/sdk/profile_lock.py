"""One writer per profile (docs/adr/0020): the lock every keystore and profile write is made under,
and the rule that an operation starts from the newest state on disk.

Several processes may use one profile at once (a `chat` open while `send` runs in another terminal).
The keystore holds what must never fork: ratchet and sender-key chain positions, one-time prekeys,
the trust store, and the refresh token, which the server honours once (presenting a rotated one
revokes the session). So each operation of a `VeilClient` runs whole under the profile's lock and,
if another process saved since this one last read or wrote the file, reloads it first; its changes
are then made to the newest state and saved before the lock is released. No merging is needed
because no two writers ever start from the same state.

The lock is an OS file lock (`filelock`, `flock` on POSIX): the kernel drops it when its holder
exits or dies, so a crash never leaves a profile locked.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from veil.client.protocol.errors import KeystoreError
from veil.client.sdk.keystore import file_stamp

# A `send` holds the lock for a second or so; only a large `send-file` holds it for minutes.
DEFAULT_WAIT_SECONDS = 300.0
LOCK_FILE_MODE = 0o600

_Class = TypeVar("_Class", bound=type)


class ProfileBusyError(KeystoreError):
    """Another process (or thread) held the profile's lock for longer than this one would wait."""


class ProfileLock:
    """Exclusive across processes and across the threads of one process; re-entrant in the thread
    that holds it, so an operation may call another.

    Open one per profile and process: two `ProfileLock`s on one file in one process exclude each
    other like two processes do, so holding both at once would wait until `wait_seconds` is over.
    """

    def __init__(self, path: Path, *, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        self.path = Path(path)
        self._wait_seconds = wait_seconds
        self._threads = threading.RLock()
        # Threads are kept apart by the RLock, so the file lock needs no per-thread state.
        self._file = FileLock(self.path, timeout=wait_seconds, mode=LOCK_FILE_MODE, thread_local=False)
        self._depth = 0

    @classmethod
    def beside(cls, keystore: Path) -> ProfileLock:
        """The lock of the profile whose keystore is `keystore` (`<keystore>.lock`, next to it): every
        process derives the same path from the keystore's, whichever program opened it."""
        keystore = Path(keystore)
        return cls(keystore.with_name(f"{keystore.name}.lock"))

    @contextmanager
    def held(self) -> Iterator[bool]:
        """Hold the lock; yields True for the outermost hold of this thread (the one that took the
        file lock), False for one nested in it."""
        if not self._threads.acquire(timeout=self._wait_seconds):
            raise self._busy()
        try:
            outermost = self._depth == 0
            if outermost:
                try:
                    self._file.acquire()
                except Timeout:
                    raise self._busy() from None
            self._depth += 1
            try:
                yield outermost
            finally:
                self._depth -= 1
                if outermost:
                    self._file.release()
        finally:
            self._threads.release()

    def _busy(self) -> ProfileBusyError:
        return ProfileBusyError(
            f"another command has held the profile's lock ({self.path}) for over "
            f"{self._wait_seconds:.0f} seconds; try again once it has finished"
        )


class SharedKeystore:
    """A keystore file that other processes write too: `operation()` holds the profile lock and,
    when the file is not the one this process last read or wrote, calls `reload` first."""

    def __init__(self, path: Path, lock: ProfileLock, reload: Callable[[], None]) -> None:
        self._path = Path(path)
        self._lock = lock
        self._reload = reload
        # The stamp of the file as this process last read or wrote it (None: no file then).
        self._stamp: bytes | None = None

    @contextmanager
    def operation(self) -> Iterator[None]:
        with self._lock.held() as outermost:
            if outermost and file_stamp(self._path) != self._stamp:
                self._reload()
                self._stamp = file_stamp(self._path)
            try:
                yield
            finally:
                # Still under the lock: what is on disk now is what this operation left there.
                if outermost:
                    self._stamp = file_stamp(self._path)

    def catch_up(self) -> None:
        """Load the newest state now (under the lock, so that it is known which write it was)."""
        with self.operation():
            pass


def one_operation(shared: SharedKeystore | None) -> AbstractContextManager[None]:
    """`shared.operation()`, or nothing to hold for a client without a keystore."""
    return nullcontext() if shared is None else shared.operation()


def operations_hold_the_profile_lock(*exempt: str) -> Callable[[_Class], _Class]:
    """Class decorator: every public method, except those named in `exempt`, runs as one
    `SharedKeystore.operation()` of the instance's `_shared` (no lock when that is None).

    Applied to the class rather than method by method so that a method added later is covered
    without anyone remembering to.
    """

    def decorate(cls: _Class) -> _Class:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and name not in exempt and inspect.isfunction(member):
                setattr(cls, name, _as_operation(member))
        return cls

    return decorate


def _as_operation(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def operation(self: Any, *args: Any, **kwargs: Any) -> Any:
        with one_operation(self._shared):
            return method(self, *args, **kwargs)

    return operation
