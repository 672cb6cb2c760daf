"""PQXDH sessions through the facade: a claimed bundle with a signed ML-KEM-768 prekey gives a
`session_init_pq` (frame type 4) whose secret mixes in the KEM secret; forged, substituted or
reused PQ prekeys and a stripped KEM ciphertext are refused; without a PQ prekey the set-up is
classical X3DH as before."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.client.support import new_device
from veil.client.protocol import pqxdh
from veil.client.protocol.errors import (
    DecryptionError,
    InvalidBundleError,
    MalformedMessageError,
    UnknownPrekeyError,
)
from veil.client.protocol.framing import FrameType, PQEncapsulation, SessionInitHeader
from veil.client.protocol.keys import DeviceKeys
from veil.client.protocol.session import ClientCrypto

# 02 | 04 | IK_a | EK_a | spk_id | has_opk | opk_id | pq_key_id | CT: then the 40-byte ratchet header.
PQ_PREFIX_SIZE = 2 + 32 + 32 + 4 + 1 + 4 + 4 + 1088
RATCHET_HEADER_SIZE = 40


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def claim(
    device: ClientCrypto,
    *,
    pq: str | None = "one_time",
    with_one_time: bool = False,
    index: int = 0,
) -> dict[str, Any]:
    """A claim response for `device` as the keys service builds it: `pq` picks its one-time PQ
    prekey number `index`, its last-resort one, or none (`None`: a server or device without PQ)."""
    bundle = device.bundle()
    claimed: dict[str, Any] = {
        "device_id": device.device_id,
        "identity_key": bundle["identity_key"],
        "signing_key": bundle["signing_key"],
        "signed_prekey": bundle["signed_prekey"],
        "one_time_prekey": bundle["one_time_prekeys"][0] if with_one_time else None,
    }
    if pq == "one_time":
        claimed["pq_prekey"] = {
            **bundle["pq_one_time_prekeys"][index],
            "last_resort": False,
        }
    elif pq == "last_resort":
        claimed["pq_prekey"] = {**bundle["pq_last_resort_prekey"], "last_resort": True}
    return claimed


def _frame(message: dict[str, Any]) -> bytes:
    return _unb64(message["ciphertext"])


def _talk(alice: ClientCrypto, bob: ClientCrypto) -> None:
    """Messages both ways on the established session, each opened by the other side."""
    for round_ in range(3):
        to_bob = alice.encrypt_for_device(bob.user_id, bob.device_id, f"a{round_}".encode())
        assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_message", to_bob) == (
            f"a{round_}".encode()
        )
        to_alice = bob.encrypt_for_device(alice.user_id, alice.device_id, f"b{round_}".encode())
        assert alice.decrypt_device_message(bob.user_id, bob.device_id, "session_message", to_alice) == (
            f"b{round_}".encode()
        )


@pytest.mark.parametrize("pq", ["one_time", "last_resort"])
@pytest.mark.parametrize("with_one_time", [True, False])
def test_a_pq_session_sets_up_and_carries_messages_both_ways(pq: str, with_one_time: bool) -> None:
    alice, bob = new_device(), new_device()
    init = alice.start_session(
        bob.user_id,
        bob.device_id,
        claim(bob, pq=pq, with_one_time=with_one_time),
        b"hello bob",
    )
    assert _frame(init)[:2] == bytes([2, FrameType.SESSION_INIT_PQ]) == b"\x02\x04"
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b"hello bob"
    _talk(alice, bob)


def test_the_session_init_pq_frame_has_the_stated_layout() -> None:
    alice, bob = new_device(), new_device()
    offered = claim(bob, with_one_time=True)
    init = alice.start_session(bob.user_id, bob.device_id, offered, b"12345")
    frame = _frame(init)
    assert len(frame) == PQ_PREFIX_SIZE + RATCHET_HEADER_SIZE + len(b"12345")
    assert PQ_PREFIX_SIZE + RATCHET_HEADER_SIZE == 1207
    _, _, identity_key, _, spk_id, has_opk, opk_id, pq_key_id = struct.unpack_from(">BB32s32sIBII", frame)
    assert identity_key == alice.keys.identity_key
    assert spk_id == offered["signed_prekey"]["key_id"]
    assert (has_opk, opk_id) == (1, offered["one_time_prekey"]["key_id"])
    assert pq_key_id == offered["pq_prekey"]["key_id"]
    header = SessionInitHeader.decode(frame)
    assert header.pq is not None
    assert header.pq.prekey_id == pq_key_id
    assert header.pq.ciphertext == frame[79:PQ_PREFIX_SIZE]
    assert header.encode() == frame[:PQ_PREFIX_SIZE]


def test_the_one_time_pq_key_is_consumed_only_after_the_first_message_authenticates() -> None:
    alice, bob = new_device(), new_device()
    offered = claim(bob)
    key_id = offered["pq_prekey"]["key_id"]
    count = bob.keys.pq_one_time_count
    init = alice.start_session(bob.user_id, bob.device_id, offered, b"hi")
    forged = {**init, "auth_tag": _b64(bytes(16))}
    with pytest.raises(DecryptionError):
        bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", forged)
    assert bob.keys.is_pq_one_time_prekey(key_id)  # a forgery burns nothing
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b"hi"
    assert not bob.keys.is_pq_one_time_prekey(key_id)
    assert bob.keys.pq_one_time_count == count - 1


def test_a_reused_one_time_pq_key_is_refused() -> None:
    """The server hands Alice's one-time PQ key to Carol as well: Bob refuses Carol's set-up."""
    alice, bob, carol = new_device(), new_device(), new_device()
    offered = claim(bob)
    init = alice.start_session(bob.user_id, bob.device_id, offered, b"first")
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b"first"
    again = carol.start_session(bob.user_id, bob.device_id, offered, b"second")
    with pytest.raises(UnknownPrekeyError):
        bob.decrypt_device_message(carol.user_id, carol.device_id, "session_init", again)
    assert not bob.has_session(carol.user_id, carol.device_id)


def test_the_last_resort_pq_key_serves_several_set_ups_and_is_kept() -> None:
    alice, bob, carol = new_device(), new_device(), new_device()
    last_resort = claim(bob, pq="last_resort")
    for initiator in (alice, carol):
        init = initiator.start_session(bob.user_id, bob.device_id, last_resort, b"hi")
        assert _frame(init)[1] == FrameType.SESSION_INIT_PQ
        assert (
            bob.decrypt_device_message(initiator.user_id, initiator.device_id, "session_init", init) == b"hi"
        )
        _talk(initiator, bob)
    bob.keys.pq_prekey_private(last_resort["pq_prekey"]["key_id"])


def _with_pq(offered: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**offered, "pq_prekey": {**offered["pq_prekey"], **changes}}


def _flipped(value: str, index: int = 0) -> str:
    raw = bytearray(_unb64(value))
    raw[index] ^= 0x01
    return _b64(bytes(raw))


def _forgeries(bob: ClientCrypto) -> dict[str, dict[str, Any]]:
    offered = claim(bob)
    pq_prekey = offered["pq_prekey"]
    mallory = DeviceKeys.generate(one_time=0, pq_one_time=1).public_bundle()["pq_one_time_prekeys"][0]
    server_key = pqxdh.public_key_bytes(pqxdh.generate_private_key())
    server_signing = Ed25519PrivateKey.generate()
    return {
        "flipped signature": _with_pq(offered, signature=_flipped(pq_prekey["signature"])),
        "flipped public key": _with_pq(offered, public_key=_flipped(pq_prekey["public_key"], 100)),
        "signature moved to another key id": _with_pq(offered, key_id=pq_prekey["key_id"] + 1),
        "another device's signed key": _with_pq(offered, **mallory),
        "the server's own key": _with_pq(
            offered,
            public_key=_b64(server_key),
            signature=_b64(pqxdh.sign_pq_prekey(server_signing, pq_prekey["key_id"], server_key)),
        ),
        "bob's last-resort key under a one-time id": _with_pq(
            offered, public_key=claim(bob, pq="last_resort")["pq_prekey"]["public_key"]
        ),
    }


@pytest.mark.parametrize(
    "forgery",
    [
        "flipped signature",
        "flipped public key",
        "signature moved to another key id",
        "another device's signed key",
        "the server's own key",
        "bob's last-resort key under a one-time id",
    ],
)
def test_a_forged_or_substituted_pq_prekey_is_refused(forgery: str) -> None:
    alice, bob = new_device(), new_device()
    with pytest.raises(InvalidBundleError, match="PQ prekey"):
        alice.start_session(bob.user_id, bob.device_id, _forgeries(bob)[forgery], b"hi")
    assert not alice.has_session(bob.user_id, bob.device_id)


@pytest.mark.parametrize(
    "pq_prekey",
    [
        "not an object",
        {
            "key_id": 1,
            "public_key": _b64(bytes(1183)),
            "signature": _b64(bytes(64)),
            "last_resort": False,
        },
        {"key_id": 1, "public_key": _b64(bytes(1184)), "signature": _b64(bytes(64))},
    ],
)
def test_a_malformed_pq_prekey_is_refused(pq_prekey: object) -> None:
    alice, bob = new_device(), new_device()
    with pytest.raises(InvalidBundleError, match="malformed"):
        alice.start_session(bob.user_id, bob.device_id, {**claim(bob), "pq_prekey": pq_prekey}, b"hi")


@pytest.mark.parametrize("absent", ["missing", "null"])
def test_a_bundle_without_a_pq_prekey_gives_a_classical_session(absent: str) -> None:
    alice, bob = new_device(), new_device()
    offered = claim(bob, pq=None, with_one_time=True)
    if absent == "null":
        offered["pq_prekey"] = None
    init = alice.start_session(bob.user_id, bob.device_id, offered, b"classical")
    assert _frame(init)[:2] == bytes([2, FrameType.SESSION_INIT]) == b"\x02\x01"
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b"classical"
    assert bob.keys.pq_one_time_count == 20  # no PQ key was touched
    _talk(alice, bob)


def test_a_client_that_requires_post_quantum_refuses_a_stripped_bundle() -> None:
    """The reference client requires a PQ prekey (all of its devices publish one): a server that
    strips it from a claim to force a classical set-up gets no session, and no key is used."""
    alice, bob = new_device(), new_device()
    stripped = claim(bob, pq=None, with_one_time=True)
    with pytest.raises(InvalidBundleError, match="post-quantum"):
        alice.start_session(bob.user_id, bob.device_id, stripped, b"x", require_post_quantum=True)
    assert not alice.has_session(bob.user_id, bob.device_id)
    init = alice.start_session(
        bob.user_id, bob.device_id, claim(bob, with_one_time=True), b"pq", require_post_quantum=True
    )
    assert _frame(init)[1] == FrameType.SESSION_INIT_PQ
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b"pq"


def test_stripping_the_kem_ciphertext_downgrades_nothing() -> None:
    """The server rewrites a `session_init_pq` into a classical `session_init` (same X25519 part,
    no ciphertext): Bob derives the classical secret, which is not Alice's, and refuses."""
    alice, bob = new_device(), new_device()
    init = alice.start_session(bob.user_id, bob.device_id, claim(bob, with_one_time=True), b"hi")
    frame = _frame(init)
    assert frame[1] == FrameType.SESSION_INIT_PQ
    header = SessionInitHeader.decode(frame)
    classical = SessionInitHeader(
        header.identity_key,
        header.ephemeral_key,
        header.signed_prekey_id,
        header.one_time_prekey_id,
    )
    stripped = classical.encode() + frame[PQ_PREFIX_SIZE:]
    with pytest.raises(DecryptionError):
        bob.decrypt_device_message(
            alice.user_id,
            alice.device_id,
            "session_init",
            {**init, "ciphertext": _b64(stripped)},
        )
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b"hi"


def test_an_altered_kem_ciphertext_is_refused_and_burns_nothing() -> None:
    alice, bob = new_device(), new_device()
    offered = claim(bob)
    init = alice.start_session(bob.user_id, bob.device_id, offered, b"hi")
    frame = bytearray(_frame(init))
    frame[500] ^= 0x01  # inside the ML-KEM ciphertext
    with pytest.raises(DecryptionError):
        bob.decrypt_device_message(
            alice.user_id,
            alice.device_id,
            "session_init",
            {**init, "ciphertext": _b64(bytes(frame))},
        )
    assert bob.keys.is_pq_one_time_prekey(offered["pq_prekey"]["key_id"])
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b"hi"


def test_a_pq_key_id_bob_never_issued_is_refused() -> None:
    alice, bob = new_device(), new_device()
    init = alice.start_session(bob.user_id, bob.device_id, claim(bob), b"hi")
    frame = bytearray(_frame(init))
    frame[75:79] = struct.pack(">I", 0xFFFFFFF0)
    with pytest.raises(UnknownPrekeyError):
        bob.decrypt_device_message(
            alice.user_id,
            alice.device_id,
            "session_init",
            {**init, "ciphertext": _b64(bytes(frame))},
        )


def test_a_device_from_before_pqxdh_gets_pq_sessions_once_it_makes_its_last_resort_key() -> None:
    alice, bob = new_device(), new_device()
    state = bob.to_state()
    for member in ("pq_last_resort_prekey", "pq_one_time_prekeys"):
        del state["keys"][member]
    bob = ClientCrypto.from_state(state)
    assert "pq_last_resort_prekey" not in bob.bundle()
    init = alice.start_session(bob.user_id, bob.device_id, claim(bob, pq=None), b"old")
    assert _frame(init)[1] == FrameType.SESSION_INIT
    assert bob.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b"old"

    made = bob.ensure_pq_last_resort_prekey()
    assert made is not None and bob.bundle()["pq_last_resort_prekey"] == made
    bob = ClientCrypto.from_state(bob.to_state())  # the SDK saves before it publishes
    carol = new_device()
    init = carol.start_session(bob.user_id, bob.device_id, claim(bob, pq="last_resort"), b"new")
    assert _frame(init)[1] == FrameType.SESSION_INIT_PQ
    assert bob.decrypt_device_message(carol.user_id, carol.device_id, "session_init", init) == b"new"


def test_client_crypto_makes_and_reports_pq_one_time_keys() -> None:
    device = ClientCrypto.create(new_device().user_id, new_device().device_id, one_time=1, pq_one_time=2)
    assert len(device.bundle()["pq_one_time_prekeys"]) == 2
    added = device.add_pq_one_time_prekeys(3)
    assert [set(p) for p in added] == [{"key_id", "public_key", "signature"}] * 3
    assert device.keys.pq_one_time_count == 5
    assert device.ensure_pq_last_resort_prekey() is None


_PQ_HEADER = SessionInitHeader(
    bytes(range(32)), bytes(range(32, 64)), 7, None, PQEncapsulation(9, bytes(range(256)) * 4 + bytes(64))
)


_PQ_FRAME = _PQ_HEADER.encode()


def _flip_byte(data: bytes, index: int, mask: int) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


@settings(derandomize=True, database=None, max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=1300),
        st.integers(0, len(_PQ_FRAME) - 1).map(lambda cut: _PQ_FRAME[:cut]),
        st.builds(_flip_byte, st.just(_PQ_FRAME), st.integers(0, len(_PQ_FRAME) - 1), st.integers(1, 255)),
    )
)
def test_a_damaged_session_init_pq_header_raises_only_malformed_message_error(data: bytes) -> None:
    try:
        header = SessionInitHeader.decode(data)
    except MalformedMessageError:
        return
    assert header.encode() == data[: header.size]


@settings(derandomize=True, database=None, max_examples=50)
@given(
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**32 - 1),
    st.none() | st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=1088, max_size=1088),
)
def test_session_init_pq_header_round_trip(
    key: bytes, spk_id: int, opk_id: int | None, pq_id: int, ciphertext: bytes
) -> None:
    header = SessionInitHeader(key, key, spk_id, opk_id, PQEncapsulation(pq_id, ciphertext))
    assert SessionInitHeader.decode(header.encode()) == header
    assert len(header.encode()) == header.size == 1167


def test_a_ciphertext_of_another_size_cannot_be_framed() -> None:
    with pytest.raises(ValueError, match="1088"):
        PQEncapsulation(1, bytes(1087))
