"""The profile lock and the rule that an operation starts from what another writer saved."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from veil.client.sdk.keystore import ScryptParams, load_state, save_state
from veil.client.sdk.profile_lock import ProfileBusyError, ProfileLock, SharedKeystore

PASSPHRASE = "a passphrase"
FAST = ScryptParams(log2_n=10)


def test_an_operation_reloads_what_another_writer_saved_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "device.veilks"
    save_state(path, {"n": 1}, PASSPHRASE, FAST)
    loaded: list[int] = []
    shared = SharedKeystore(
        path, ProfileLock.beside(path), lambda: loaded.append(load_state(path, PASSPHRASE)["n"])
    )
    shared.catch_up()
    with shared.operation():
        save_state(path, {"n": 2}, PASSPHRASE, FAST)  # this process's own write
    with shared.operation():
        pass
    assert loaded == [1]

    save_state(path, {"n": 3}, PASSPHRASE, FAST)  # another process's
    with shared.operation(), shared.operation():  # an operation calling another reloads once
        pass
    assert loaded == [1, 3]


def test_the_lock_lets_its_holder_in_again_and_keeps_everyone_else_out(tmp_path: Path) -> None:
    lock = ProfileLock(tmp_path / "profile.lock", wait_seconds=0.2)
    other_process = ProfileLock(tmp_path / "profile.lock", wait_seconds=0.2)  # its own file handle
    outcomes: list[str] = []

    def other_thread() -> None:
        try:
            with lock.held():
                outcomes.append("in")
        except ProfileBusyError:
            outcomes.append("busy")

    with lock.held() as outer:
        with lock.held() as inner:
            assert (outer, inner) == (True, False)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        with pytest.raises(ProfileBusyError), other_process.held():
            pass
    assert outcomes == ["busy"]
    with other_process.held():  # free once its holder let go
        pass
