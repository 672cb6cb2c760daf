"""Pairwise sessions through the facade: set-up, both directions, order, replays, strangers."""

from __future__ import annotations

import base64
import json
import random
import uuid
from typing import Any

import pytest

from tests.unit.client.support import NOW, Directory, connect, new_device
from veil.client.protocol.double_ratchet import SKIPPED_MAX_AGE
from veil.client.protocol.errors import (
    DecryptionError,
    IdentityMismatchError,
    InvalidBundleError,
    MalformedMessageError,
    ReplayError,
    UnknownPrekeyError,
    UnknownSessionError,
)
from veil.client.protocol.keys import PREKEY_ROTATION_SECONDS
from veil.client.protocol.session import STATE_VERSION, ClientCrypto


@pytest.mark.parametrize("with_one_time", [True, False])
def test_session_set_up_and_messages_both_ways_in_and_out_of_order(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, with_one_time: bool
) -> None:
    directory.publish(bob)
    claim = directory.claim(bob, with_one_time=with_one_time)
    assert (claim["one_time_prekey"] is not None) is with_one_time
    init = alice.start_session(bob.user_id, bob.device_id, claim, b"hello bob")
    assert set(init) == {"device_id", "ciphertext", "nonce", "auth_tag"}
    assert init["device_id"] == bob.device_id
    assert bob.accept_session(alice.user_id, alice.device_id, init) == b"hello bob"

    to_bob = [
        (f"a{i}".encode(), alice.encrypt_for_device(bob.user_id, bob.device_id, f"a{i}".encode()))
        for i in range(8)
    ]
    to_alice = [
        (f"b{i}".encode(), bob.encrypt_for_device(alice.user_id, alice.device_id, f"b{i}".encode()))
        for i in range(8)
    ]
    rng = random.Random(1)
    rng.shuffle(to_bob)
    rng.shuffle(to_alice)
    for expected, message in to_bob:
        assert (
            bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message) == expected
        )
    for expected, message in to_alice:
        assert (
            alice.decrypt_device_message(bob.user_id, bob.device_id, "session_message", message) == expected
        )


def test_a_set_up_from_a_bundle_claimed_before_a_rotation_opens_until_the_next(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    directory.publish(bob)
    claim = directory.claim(bob, with_one_time=False)  # the signed prekey alone: the weakest case
    assert not bob.rotate_prekeys_if_due(NOW)
    assert bob.rotate_prekeys_if_due(NOW + PREKEY_ROTATION_SECONDS)
    bob.prekeys_published(NOW + PREKEY_ROTATION_SECONDS)
    assert bob.bundle()["signed_prekey"]["key_id"] != claim["signed_prekey"]["key_id"]
    init = alice.start_session(bob.user_id, bob.device_id, claim, b"in flight")
    assert bob.accept_session(alice.user_id, alice.device_id, init) == b"in flight"

    # A week later that prekey is gone with its private key: a set-up held back that long, or made
    # by someone who stole the key, opens nothing.
    assert bob.rotate_prekeys_if_due(NOW + 2 * PREKEY_ROTATION_SECONDS)
    carol = new_device()
    late = carol.start_session(bob.user_id, bob.device_id, claim, b"too late")
    with pytest.raises(UnknownPrekeyError):
        bob.accept_session(carol.user_id, carol.device_id, late)


def test_one_time_prekey_is_deleted_after_use(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    before = bob.keys.one_time_count
    connect(directory, alice, bob)
    assert bob.keys.one_time_count == before - 1


def test_replays_are_refused(directory: Directory, alice: ClientCrypto, bob: ClientCrypto) -> None:
    directory.publish(bob)
    init = alice.start_session(bob.user_id, bob.device_id, directory.claim(bob), b"init")
    bob.accept_session(alice.user_id, alice.device_id, init)
    with pytest.raises(ReplayError):
        bob.accept_session(alice.user_id, alice.device_id, init)
    message = alice.encrypt_for_device(bob.user_id, bob.device_id, b"once")
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message) == b"once"
    with pytest.raises(ReplayError):
        bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message)


def test_replayed_session_init_without_one_time_key_is_refused_even_after_restore(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    directory.publish(bob)
    init = alice.start_session(bob.user_id, bob.device_id, directory.claim(bob, with_one_time=False), b"x")
    bob.accept_session(alice.user_id, alice.device_id, init)
    restored = ClientCrypto.from_state(bob.to_state())
    with pytest.raises(ReplayError):
        restored.accept_session(alice.user_id, alice.device_id, init)


def test_a_third_party_cannot_decrypt(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, eve: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    connect(directory, alice, eve)  # Eve even has her own session with Alice
    message = alice.encrypt_for_device(bob.user_id, bob.device_id, b"for bob only")
    with pytest.raises((DecryptionError, UnknownSessionError)):
        eve.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message)
    # Nor can Eve use Bob's session_init addressed to Bob.
    directory.publish(bob)
    init = alice.start_session(bob.user_id, bob.device_id, directory.claim(bob), b"secret")
    with pytest.raises((DecryptionError, UnknownPrekeyError)):
        eve.accept_session(alice.user_id, alice.device_id, init)


@pytest.mark.parametrize("field", ["recipient", "sender_id", "sender_device_id", "content_type"])
def test_device_messages_are_bound_to_their_metadata(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, field: str
) -> None:
    connect(directory, alice, bob)
    message = alice.encrypt_for_device(bob.user_id, bob.device_id, b"bound")
    sender_id, sender_device_id, content_type = alice.user_id, alice.device_id, "session_message"
    if field == "recipient":
        # The same state under another device id: as if the server delivered it to another device.
        bob = ClientCrypto.from_state({**bob.to_state(), "device_id": str(uuid.uuid4())})
    elif field == "sender_id":
        sender_id = str(uuid.uuid4())
    elif field == "sender_device_id":
        sender_device_id = str(uuid.uuid4())
    else:
        content_type = "sender_key"
    with pytest.raises((DecryptionError, UnknownSessionError)):
        bob.decrypt_device_message(sender_id, sender_device_id, content_type, message)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "auth_tag"])
def test_any_flipped_byte_of_a_device_message_fails(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, field: str
) -> None:
    connect(directory, alice, bob)
    message = alice.encrypt_for_device(bob.user_id, bob.device_id, b"sixteen bytes!!!")
    raw = base64.b64decode(message[field])
    for position in range(len(raw)):
        tampered = bytearray(raw)
        tampered[position] ^= 0x80
        forged: dict[str, Any] = {**message, field: base64.b64encode(bytes(tampered)).decode()}
        with pytest.raises((DecryptionError, UnknownSessionError)):
            bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", forged)
    # None of the forgeries advanced Bob's state: the genuine message still opens.
    assert (
        bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message)
        == b"sixteen bytes!!!"
    )


def test_a_forged_session_init_does_not_burn_the_one_time_key(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    directory.publish(bob)
    init = alice.start_session(bob.user_id, bob.device_id, directory.claim(bob), b"real")
    tag = bytearray(base64.b64decode(init["auth_tag"]))
    tag[0] ^= 1
    with pytest.raises(DecryptionError):
        bob.accept_session(
            alice.user_id, alice.device_id, {**init, "auth_tag": base64.b64encode(bytes(tag)).decode()}
        )
    assert bob.accept_session(alice.user_id, alice.device_id, init) == b"real"


def test_simultaneous_set_ups_still_let_both_sides_talk(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    directory.publish(alice)
    directory.publish(bob)
    from_alice = alice.start_session(bob.user_id, bob.device_id, directory.claim(bob), b"a")
    from_bob = bob.start_session(alice.user_id, alice.device_id, directory.claim(alice), b"b")
    assert bob.accept_session(alice.user_id, alice.device_id, from_alice) == b"a"
    assert alice.accept_session(bob.user_id, bob.device_id, from_bob) == b"b"
    for _ in range(3):
        to_bob = alice.encrypt_for_device(bob.user_id, bob.device_id, b"ping")
        assert (
            bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", to_bob) == b"ping"
        )
        to_alice = bob.encrypt_for_device(alice.user_id, alice.device_id, b"pong")
        assert (
            alice.decrypt_device_message(bob.user_id, bob.device_id, "session_message", to_alice) == b"pong"
        )


def test_bundle_checks(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, eve: ClientCrypto
) -> None:
    directory.publish(bob)
    directory.publish(eve)
    with pytest.raises(InvalidBundleError):  # a bundle for another device than requested
        alice.start_session(bob.user_id, bob.device_id, directory.claim(eve))
    with pytest.raises(InvalidBundleError, match="identity key is not the device's certified one"):
        alice.start_session(bob.user_id, bob.device_id, directory.claim(bob), expected_identity_key=bytes(32))
    with pytest.raises(InvalidBundleError, match="signing key is not the device's certified one"):
        alice.start_session(bob.user_id, bob.device_id, directory.claim(bob), expected_signing_key=bytes(32))
    assert not alice.has_session(bob.user_id, bob.device_id)
    alice.start_session(
        bob.user_id,
        bob.device_id,
        directory.claim(bob),
        expected_identity_key=bob.keys.identity_key,
        expected_signing_key=bob.keys.signing_key,
    )


def mixed_bundle(directory: Directory, victim: ClientCrypto, server: ClientCrypto) -> dict[str, Any]:
    """The victim's identity key with the server's own signing key, signed prekey and one-time prekey."""
    directory.publish(server)
    return {
        **directory.claim(server),
        "device_id": victim.device_id,
        "identity_key": base64.b64encode(victim.keys.identity_key).decode(),
    }


def test_a_mixed_bundle_is_refused_by_the_certified_keys(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """First contact, nothing pinned yet: only the certified keys can tell the bundle is mixed."""
    server = new_device(bob.user_id)
    with pytest.raises(InvalidBundleError, match="signing key"):
        alice.start_session(
            bob.user_id,
            bob.device_id,
            mixed_bundle(directory, bob, server),
            expected_identity_key=bob.keys.identity_key,
            expected_signing_key=bob.keys.signing_key,
        )
    assert not alice.has_session(bob.user_id, bob.device_id)


def test_a_mixed_bundle_is_refused_by_the_pinned_signing_key(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """Alice pinned Bob's keys in an earlier session: the pinned identity key with another signing
    key is refused even without expectations."""
    connect(directory, alice, bob)
    server = new_device(bob.user_id)
    with pytest.raises(IdentityMismatchError, match="signing key"):
        alice.start_session(bob.user_id, bob.device_id, mixed_bundle(directory, bob, server))
    # The pin survives a restart, and only forget_peer (after checking the keys) lifts it.
    alice = ClientCrypto.from_state(alice.to_state())
    with pytest.raises(IdentityMismatchError, match="signing key"):
        alice.start_session(bob.user_id, bob.device_id, mixed_bundle(directory, bob, server))
    alice.forget_peer(bob.user_id, bob.device_id)
    assert alice.peer_identity_key(bob.user_id, bob.device_id) is None
    assert alice.peer_signing_key(bob.user_id, bob.device_id) is None
    alice.start_session(bob.user_id, bob.device_id, directory.claim(bob))


def test_a_foreign_prekey_under_the_genuine_signing_key_is_refused(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    server = new_device(bob.user_id)
    directory.publish(server)
    claim = {**directory.claim(bob), "signed_prekey": directory.claim(server)["signed_prekey"]}
    with pytest.raises(InvalidBundleError, match="signature"):
        alice.start_session(bob.user_id, bob.device_id, claim)


def test_the_certified_signing_key_is_pinned_by_a_session_the_peer_started(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """A `session_init` carries no signing key: the caller's certified one is pinned from it."""
    directory.publish(alice)
    init = bob.start_session(alice.user_id, alice.device_id, directory.claim(alice), b"hi")
    with pytest.raises(IdentityMismatchError):  # a certified identity key other than the sender's
        alice.decrypt_device_message(
            bob.user_id, bob.device_id, "session_init", init, expected_identity_key=bytes(32)
        )
    assert (
        alice.decrypt_device_message(
            bob.user_id,
            bob.device_id,
            "session_init",
            init,
            expected_identity_key=bob.keys.identity_key,
            expected_signing_key=bob.keys.signing_key,
        )
        == b"hi"
    )
    assert alice.peer_identity_key(bob.user_id, bob.device_id) == bob.keys.identity_key
    assert alice.peer_signing_key(bob.user_id, bob.device_id) == bob.keys.signing_key
    server = new_device(bob.user_id)
    with pytest.raises(IdentityMismatchError, match="signing key"):
        alice.start_session(bob.user_id, bob.device_id, mixed_bundle(directory, bob, server))
    directory.publish(bob)
    alice.start_session(bob.user_id, bob.device_id, directory.claim(bob))


def test_identity_keys_are_pinned_per_device(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    impostor = new_device(bob.user_id)
    directory.publish(impostor)
    claim = {**directory.claim(impostor), "device_id": bob.device_id}
    with pytest.raises(IdentityMismatchError):
        alice.start_session(bob.user_id, bob.device_id, claim)
    alice.forget_peer(bob.user_id, bob.device_id)
    alice.start_session(bob.user_id, bob.device_id, claim)


def test_no_session_no_encryption(alice: ClientCrypto, bob: ClientCrypto) -> None:
    assert not alice.has_session(bob.user_id, bob.device_id)
    with pytest.raises(UnknownSessionError):
        alice.encrypt_for_device(bob.user_id, bob.device_id, b"x")
    with pytest.raises(ValueError, match="content_type"):
        alice.encrypt_for_device(bob.user_id, bob.device_id, b"x", content_type="session_init")


def test_sessions_survive_a_state_round_trip(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    alice = ClientCrypto.from_state(alice.to_state())
    bob = ClientCrypto.from_state(bob.to_state())
    message = alice.encrypt_for_device(bob.user_id, bob.device_id, b"after restart")
    assert (
        bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message)
        == b"after restart"
    )


def test_skipped_pairwise_keys_expire_by_age(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """A message held back longer than SKIPPED_MAX_AGE is unreadable: its key was dropped, so a
    thief of Bob's state a week later finds no key for it either."""
    connect(directory, alice, bob)
    late, on_time = (alice.encrypt_for_device(bob.user_id, bob.device_id, m) for m in (b"late", b"on time"))
    opened = bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", on_time, now=NOW)
    assert opened == b"on time"  # index 0 of this chain is skipped and kept, stamped NOW
    survivor = ClientCrypto.from_state(bob.to_state())
    assert (
        survivor.decrypt_device_message(
            alice.user_id, alice.device_id, "session_message", late, now=NOW + SKIPPED_MAX_AGE - 1
        )
        == b"late"
    )
    with pytest.raises(DecryptionError):
        bob.decrypt_device_message(
            alice.user_id, alice.device_id, "session_message", late, now=NOW + SKIPPED_MAX_AGE
        )


def test_a_version_2_state_loads_without_its_sessions_but_with_its_keys_and_pins(
    directory: Directory,
) -> None:
    """Alice and Bob saved by the hash-ratchet client (state version 2, frame version 1): after the
    upgrade their v1 session is gone (Alice's v1 message is refused by its frame version), every
    key and both pins remain, and the next send starts a Double Ratchet session that works."""
    old = json.loads(VERSION_2_STATES)
    alice, bob = ClientCrypto.from_state(old["alice"]), ClientCrypto.from_state(old["bob"])
    assert alice.to_state()["version"] == bob.to_state()["version"] == STATE_VERSION == 3
    assert alice.keys.to_state() == old["alice"]["keys"] and bob.keys.to_state() == old["bob"]["keys"]
    assert not alice.has_session(bob.user_id, bob.device_id)
    assert not bob.has_session(alice.user_id, alice.device_id)
    assert bob.peer_identity_key(alice.user_id, alice.device_id) == alice.keys.identity_key
    assert bob.peer_signing_key(alice.user_id, alice.device_id) == alice.keys.signing_key
    assert alice.peer_identity_key(bob.user_id, bob.device_id) == bob.keys.identity_key
    with pytest.raises(MalformedMessageError, match="unsupported frame version 1"):
        bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", old["v1_message"])

    impostor = new_device(alice.user_id)  # the kept pin still guards Alice's device
    directory.publish(impostor)
    with pytest.raises(IdentityMismatchError):
        bob.start_session(
            alice.user_id, alice.device_id, {**directory.claim(impostor), "device_id": alice.device_id}
        )

    directory.publish(alice)
    init = bob.start_session(alice.user_id, alice.device_id, directory.claim(alice), b"v2 now")
    assert alice.decrypt_device_message(bob.user_id, bob.device_id, "session_init", init) == b"v2 now"
    message = alice.encrypt_for_device(bob.user_id, bob.device_id, b"and back")
    assert (
        bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message) == b"and back"
    )


@pytest.mark.parametrize("version", [1, 4, "3"])
def test_other_state_versions_are_refused(alice: ClientCrypto, version: object) -> None:
    with pytest.raises(ValueError, match="supported version"):
        ClientCrypto.from_state({**alice.to_state(), "version": version})


# Made by the client at commit a1de42a (state version 2, hash-ratchet sessions, frame version 1):
# Alice started a session with Bob (both pinned each other's certified keys) and then sent
# `v1_message` on it.
VERSION_2_STATES = """\
{
 "alice": {
  "format": "veil-client-state",
  "version": 2,
  "user_id": "00000000-0000-0000-0000-0000000a11ce",
  "device_id": "00000000-0000-0000-0000-000000a11ce0",
  "keys": {
   "identity": "8EEnJwrV0lLUjFeCeVjUmGCqZMcaFIW1Cz3/6kQJDEQ=",
   "signing": "9+mbLmNKf4RtAymXHEAWLwpjTrCfQD15fGH84Wn7BJE=",
   "signed_prekey": {
    "key_id": 1,
    "private_key": "+AzL81aOg7uWgQ2muHexWXpSqnhLNwSnrafQXUZfpHk=",
    "signature": "mcQPHR+SziZH9dj7JPjpbuPed7mOICWy3f1mF6H63TF88gJ8RjJxb9gd+YPTP8ICsDItNH9cL8e5qHV3lYzjDg=="
   },
   "previous_signed_prekeys": [],
   "one_time_prekeys": [
    {
     "key_id": 2,
     "private_key": "uA4DlaG5sPOiMenbRm3ihAsey4l01MNDPgclv5/dB0o="
    }
   ],
   "next_key_id": 3
  },
  "peers": [
   {
    "user_id": "00000000-0000-0000-0000-000000000b0b",
    "device_id": "00000000-0000-0000-0000-00000000b0b0",
    "sessions": [
     {
      "session_id": "0tYn7Oxx6yOKmU18dH97IA==",
      "peer_identity_key": "jyJx/hEPbnxS//fMqTKYztB/M5ful5IsHlSjedpwAC8=",
      "sending": {
       "chain_key": "Wa4OOZzE0GA3HzDdXa1D0hj9ewKaGytwvOqi1jxm4dg=",
       "index": 2
      },
      "receiving": {
       "chain_key": "w/n2aQQpuHQse/J5NvmsK+Xt8Z+9K+Pgh0t9XYddB/U=",
       "next_index": 0,
       "skipped": []
      }
     }
    ],
    "retired": []
   }
  ],
  "signing_pins": [
   {
    "user_id": "00000000-0000-0000-0000-000000000b0b",
    "device_id": "00000000-0000-0000-0000-00000000b0b0",
    "signing_key": "PH6yEsZsOKTGNRe/lNh5lQbPgG5WYuVxGq2zZpxzy6Y="
   }
  ],
  "sender_keys": {
   "own": [],
   "peers": [],
   "retirements": []
  },
  "epoch_grace_seconds": 3600.0
 },
 "bob": {
  "format": "veil-client-state",
  "version": 2,
  "user_id": "00000000-0000-0000-0000-000000000b0b",
  "device_id": "00000000-0000-0000-0000-00000000b0b0",
  "keys": {
   "identity": "iFRg45TxDOFWrUy7i/QglUKy1nxwDfgKTkELYkIpU0k=",
   "signing": "qDcX5y0Ad7nR10MJWFrETr7RDMoJMl8XMHZNkMdFogk=",
   "signed_prekey": {
    "key_id": 1,
    "private_key": "ALXlEqDkC5aljgKO521o2iv43w6CGFy+4mkOQvJnYm0=",
    "signature": "3/Vls55mlbbCQ2PVc51Ob4aNnfgryggD7Fd4ed/uk7g+PdgkL5CM6biDXQPz9WcLZDvEYAUB5KOWKPk1d3CyBg=="
   },
   "previous_signed_prekeys": [],
   "one_time_prekeys": [],
   "next_key_id": 3
  },
  "peers": [
   {
    "user_id": "00000000-0000-0000-0000-0000000a11ce",
    "device_id": "00000000-0000-0000-0000-000000a11ce0",
    "sessions": [
     {
      "session_id": "0tYn7Oxx6yOKmU18dH97IA==",
      "peer_identity_key": "an+NCjyHkQV3n0fRkG0GFyCrw9y3KT7yFONR6REJeXk=",
      "sending": {
       "chain_key": "w/n2aQQpuHQse/J5NvmsK+Xt8Z+9K+Pgh0t9XYddB/U=",
       "index": 0
      },
      "receiving": {
       "chain_key": "mvkOTl8MhABUMrBEColHv2xgag0UlcTSVBSIhFcvAwo=",
       "next_index": 1,
       "skipped": []
      }
     }
    ],
    "retired": []
   }
  ],
  "signing_pins": [
   {
    "user_id": "00000000-0000-0000-0000-0000000a11ce",
    "device_id": "00000000-0000-0000-0000-000000a11ce0",
    "signing_key": "jB3Ng5kHisGbgoYzTXmOzooADrQIlrNWwAK09uMG95o="
   }
  ],
  "sender_keys": {
   "own": [],
   "peers": [],
   "retirements": []
  },
  "epoch_grace_seconds": 3600.0
 },
 "v1_message": {
  "device_id": "00000000-0000-0000-0000-00000000b0b0",
  "ciphertext": "AQLS1ifs7HHrI4qZTXx0f3sgAAAAAZFY4Wrj8ijtm2k=",
  "nonce": "PEirx1wRF7lYtEeB",
  "auth_tag": "BjAoNZ78pY6drFKHgO7oBQ=="
 }
}
"""
