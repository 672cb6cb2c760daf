"""The encrypted keystore: round trip, wrong passphrase, no key bytes at rest, private atomic file."""

from __future__ import annotations

import base64
import stat
import uuid
from pathlib import Path

import pytest

from tests.unit.client.support import Directory, connect, roster_hash
from veil.client.protocol.errors import KeystoreFormatError, WrongPassphraseError
from veil.client.protocol.session import ClientCrypto
from veil.client.sdk.keystore import ScryptParams, decrypt_state, encrypt_state, load_state, save_state

FAST = ScryptParams(log2_n=10)  # tests only: the default costs about 128 MiB and a third of a second
PASSPHRASE = "correct horse battery staple"


def _secrets(device: ClientCrypto) -> list[bytes]:
    """Every private key and chain key the device holds, raw."""
    keys = device.keys
    secrets = [
        keys.identity.private_bytes_raw(),
        keys.signing.private_bytes_raw(),
        keys.signed_prekey.private_key.private_bytes_raw(),
    ]
    state = device.to_state()
    secrets += [base64.b64decode(p["private_key"]) for p in state["keys"]["one_time_prekeys"]]
    for peer in state["peers"]:
        for session in peer["sessions"]:
            ratchet = session["ratchet"]
            secrets.append(base64.b64decode(ratchet["own_ratchet_private"]))
            secrets += [
                base64.b64decode(ratchet[c]["key"]) for c in ("root", "sending", "receiving") if ratchet[c]
            ]
            secrets += [base64.b64decode(k["message_key"]) for k in ratchet["skipped"]]
    for own in state["sender_keys"]["own"]:
        secrets.append(base64.b64decode(own["chain"]["chain_key"]))
        secrets.append(base64.b64decode(own["signing"]))
    return secrets


@pytest.fixture
def device(directory: Directory, alice: ClientCrypto, bob: ClientCrypto) -> ClientCrypto:
    """Alice with keys, a session and a sender key: something of every kind to protect."""
    connect(directory, alice, bob)
    alice.group_sender_key_distribution(str(uuid.uuid4()), 0, roster_hash(alice, bob), now=0.0)
    return alice


def test_round_trip(tmp_path: Path, device: ClientCrypto) -> None:
    path = tmp_path / "alice.keystore"
    save_state(path, device.to_state(), PASSPHRASE, FAST)
    restored = ClientCrypto.from_state(load_state(path, PASSPHRASE))
    assert restored.to_state() == device.to_state()


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path, device: ClientCrypto) -> None:
    path = tmp_path / "alice.keystore"
    save_state(path, device.to_state(), PASSPHRASE, FAST)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        load_state(path, PASSPHRASE + "!")


def test_the_file_holds_no_key_in_the_clear(tmp_path: Path, device: ClientCrypto) -> None:
    path = tmp_path / "alice.keystore"
    save_state(path, device.to_state(), PASSPHRASE, FAST)
    data = path.read_bytes()
    secrets = _secrets(device)
    assert len(secrets) >= 8
    for secret in secrets:
        for encoding in (
            secret,
            base64.b64encode(secret),
            base64.urlsafe_b64encode(secret),
            secret.hex().encode(),
        ):
            assert encoding not in data
        assert base64.b64encode(secret)[:20] not in data  # not even a prefix of the base64
    assert PASSPHRASE.encode() not in data
    assert b"private_key" not in data and b"identity" not in data  # the JSON is not visible either


def test_the_file_is_private_and_replaced_atomically(tmp_path: Path, device: ClientCrypto) -> None:
    path = tmp_path / "alice.keystore"
    save_state(path, device.to_state(), PASSPHRASE, FAST)
    first = path.read_bytes()
    save_state(path, device.to_state(), PASSPHRASE, FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() != first  # fresh salt and nonce on every save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.keystore"]  # no temporary left behind


def test_a_modified_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    save_state(path, {"k": "v"}, PASSPHRASE, FAST)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WrongPassphraseError):
        load_state(path, PASSPHRASE)


def test_parameters_are_authenticated_and_bounded() -> None:
    data = bytearray(encrypt_state({"k": "v"}, PASSPHRASE, FAST))
    assert decrypt_state(bytes(data), PASSPHRASE) == {"k": "v"}
    weakened = bytearray(data)
    weakened[8] = 4  # r: still in range, but not what was written (8)
    with pytest.raises(WrongPassphraseError):
        decrypt_state(bytes(weakened), PASSPHRASE)
    expensive = bytearray(data)
    expensive[7] = 40  # log2(N) = 40 would be a denial of service
    with pytest.raises(KeystoreFormatError):
        decrypt_state(bytes(expensive), PASSPHRASE)
    expensive[7], expensive[8] = 22, 32  # each in range, together 16 GiB of memory
    with pytest.raises(KeystoreFormatError, match="1 GiB"):
        decrypt_state(bytes(expensive), PASSPHRASE)


def test_other_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b'{"identity": "not a keystore"}')
    with pytest.raises(KeystoreFormatError):
        load_state(path, PASSPHRASE)


def test_unicode_passphrases_are_normalised() -> None:
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    data = encrypt_state({"k": 1}, composed, FAST)
    assert decrypt_state(data, decomposed) == {"k": 1}


def test_default_parameters_work(tmp_path: Path) -> None:
    path = tmp_path / "default"
    save_state(path, {"k": 1}, PASSPHRASE)
    assert load_state(path, PASSPHRASE) == {"k": 1}
