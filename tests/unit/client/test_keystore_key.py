"""One key per key store: derived once, reused for every save and reload (docs/adr/0022).

The salt and Scrypt parameters stay across saves and the nonce changes, so a process (or the unlock
agent) that derived the key once never runs Scrypt again for that key store, and other processes
still see every write (`file_stamp`, docs/adr/0020)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.client.test_pairwise import VERSION_2_STATES
from veil.client.protocol.errors import WrongPassphraseError
from veil.client.sdk.http import VeilClient
from veil.client.sdk.keystore import (
    NONCE_SIZE,
    SALT_SIZE,
    KeystoreKey,
    KeystoreKeyChangedError,
    ScryptParams,
    file_stamp,
    load_state,
    open_keystore,
    save_state,
)

FAST = ScryptParams(log2_n=10)
PASSPHRASE = "a passphrase for one key store"
SALT_AT = len(b"VEILKS") + 4


def salt_of(path: Path) -> bytes:
    return path.read_bytes()[SALT_AT : SALT_AT + SALT_SIZE]


def nonce_of(path: Path) -> bytes:
    return path.read_bytes()[SALT_AT + SALT_SIZE : SALT_AT + SALT_SIZE + NONCE_SIZE]


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The salts Scrypt ran with, from here on: what a held key saves."""
    seen: list[bytes] = []
    derive: Callable[[ScryptParams, str, bytes], bytes] = ScryptParams.derive

    def counting(self: ScryptParams, passphrase: str, salt: bytes) -> bytes:
        seen.append(salt)
        return derive(self, passphrase, salt)

    monkeypatch.setattr(ScryptParams, "derive", counting)
    return seen


def test_saves_under_one_key_keep_the_salt_and_draw_a_new_nonce(
    tmp_path: Path, derivations: list[bytes]
) -> None:
    path = tmp_path / "device.veilks"
    key = KeystoreKey.new(PASSPHRASE, FAST)
    nonces, stamps = set(), set()
    for n in range(5):
        save_state(path, {"n": n}, key)
        assert salt_of(path) == key.salt
        nonces.add(nonce_of(path))
        stamps.add(file_stamp(path))
    assert len(nonces) == 5 and len(stamps) == 5  # every write still tells itself apart
    assert derivations == [key.salt]  # one Scrypt run, for five saves
    assert load_state(path, PASSPHRASE) == {"n": 4}  # and the passphrase still opens it


def test_a_key_is_derived_again_only_for_a_new_salt(tmp_path: Path, derivations: list[bytes]) -> None:
    path = tmp_path / "device.veilks"
    save_state(path, {"n": 1}, PASSPHRASE, FAST)
    state, key = open_keystore(path, passphrase=PASSPHRASE)
    assert state == {"n": 1} and key.salt == salt_of(path)
    assert key == KeystoreKey.decode(key.encode())  # as the unlock agent hands it over
    assert PASSPHRASE.encode() not in key.encode() and "key=" not in repr(key)
    derivations.clear()

    save_state(path, {"n": 2}, key)
    assert open_keystore(path, key=key, passphrase=PASSPHRASE) == ({"n": 2}, key)
    assert derivations == []

    # A new passphrase (or a key store restored from elsewhere) comes with a new salt: the held key
    # no longer fits, and only the passphrase opens the file.
    rekeyed = KeystoreKey.new("another passphrase", FAST)
    assert rekeyed.salt != key.salt
    save_state(path, {"n": 3}, rekeyed)
    with pytest.raises(KeystoreKeyChangedError):
        open_keystore(path, key=key)
    assert open_keystore(path, key=key, passphrase="another passphrase") == ({"n": 3}, rekeyed)


def test_a_wrong_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.veilks"
    key = KeystoreKey.new(PASSPHRASE, FAST)
    save_state(path, {"n": 1}, key)
    same_salt_wrong_passphrase = KeystoreKey(key.params, key.salt, FAST.derive("not it", key.salt))
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        load_state(path, same_salt_wrong_passphrase)
    with pytest.raises(WrongPassphraseError):
        open_keystore(path, passphrase="not it")


def test_an_old_key_store_with_a_salt_per_save_still_opens(tmp_path: Path, derivations: list[bytes]) -> None:
    """Key stores written before keys were kept have a new salt after every save: they open with the
    passphrase, and from then on keep the salt they had."""
    path = tmp_path / "device.veilks"
    save_state(path, {"n": 1}, PASSPHRASE, FAST)  # the old writer: a fresh salt each time
    save_state(path, {"n": 2}, PASSPHRASE, FAST)
    old_salt = salt_of(path)
    state, key = open_keystore(path, passphrase=PASSPHRASE)
    assert state == {"n": 2} and key.salt == old_salt
    save_state(path, {"n": 3}, key)
    assert salt_of(path) == old_salt


def test_a_client_reloads_another_writers_save_with_the_key_it_holds(
    tmp_path: Path, derivations: list[bytes]
) -> None:
    keystore = tmp_path / "bob.veilks"
    state = json.loads(VERSION_2_STATES)["bob"]
    state["veil_http"] = {"version": 2, "link_secret": base64.b64encode(os.urandom(10)).decode()}
    save_state(keystore, state, PASSPHRASE, FAST)
    derivations.clear()

    this_process = VeilClient("https://127.0.0.1:9", keystore=keystore, passphrase=PASSPHRASE)
    assert len(derivations) == 1  # the key is derived once, on opening
    held = this_process._keystore_key
    assert held is not None and held.salt == salt_of(keystore)
    # Another process, given the key by the unlock agent: no passphrase, no Scrypt.
    other_process = VeilClient("https://127.0.0.1:9", keystore=keystore, keystore_key=held)
    assert other_process._shared is not None
    with other_process._shared.operation():
        other_process.dropped_device_messages = 7
        other_process._save()
    assert salt_of(keystore) == held.salt

    assert this_process._shared is not None
    this_process._shared.catch_up()  # the header changed: it reloads, with the key it holds
    assert this_process.dropped_device_messages == 7
    with this_process._shared.operation():
        this_process._save()
    assert len(derivations) == 1 and salt_of(keystore) == held.salt
