"""Known-answer vectors for pairwise sessions (tests/vectors/double_ratchet.json): the production
code must reproduce every recorded value and open every recorded ciphertext, and the formulas the
file's description states, written out here on `cryptography` alone, must give the same bytes.
The AEAD nonces, random in production, are inputs: taken from the recorded envelopes."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.vectors.make_double_ratchet import fixed_nonces, fixed_ratchet_keys
from veil.client.protocol import x3dh
from veil.client.protocol.double_ratchet import chain_step, root_step
from veil.client.protocol.envelope import DeviceContext, Sealed
from veil.client.protocol.framing import RatchetHeader, SessionInitHeader, SessionMessageHeader
from veil.client.protocol.keys import DeviceKeys, SignedPrekey, public_bytes
from veil.client.protocol.pairwise import PairwiseSession, session_associated_data, session_id_for

VECTORS = Path(__file__).parents[2] / "vectors" / "double_ratchet.json"
FILE = json.loads(VECTORS.read_text(encoding="utf-8"))
KINDS = [
    "x3dh",
    "initiator_first_chain",
    "message_key",
    "session_init",
    "responder_ratchet_step",
    "session_message_reply",
    "initiator_ratchet_step",
    "session_message_new_chain",
]


def case(kind: str) -> dict[str, Any]:
    (found,) = [item for item in FILE["cases"] if item["kind"] == kind]
    return found


def _hex(data: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(data[key])


def _pub(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(public_key)
    )


# The description's formulas, on `cryptography` alone (not the production modules).


def _root_step(root_key: bytes, dh_output: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(hashes.SHA256(), 64, salt=root_key, info=b"veil/double-ratchet/root/v2").derive(dh_output)
    return okm[:32], okm[32:]


def _chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    def mac(byte: bytes) -> bytes:
        h = hmac.HMAC(chain_key, hashes.SHA256())
        h.update(byte)
        return h.finalize()

    return mac(b"\x01"), mac(b"\x02")


def _length_prefixed(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(field)) + field for field in fields)


def _context(data: dict[str, Any]) -> DeviceContext:
    fields = data["context"]
    return DeviceContext(
        fields["recipient_device_id"], fields["sender_id"], fields["sender_device_id"], fields["content_type"]
    )


def _sealed(data: dict[str, Any]) -> Sealed:
    envelope = data["envelope"]
    return Sealed(_hex(envelope, "ciphertext"), _hex(envelope, "nonce"), _hex(envelope, "auth_tag"))


def _device_keys(prefix: str, with_one_time: bool) -> DeviceKeys:
    """Bob's keys from the x3dh case; Alice's identity only matters (her other keys are unused)."""
    inputs = case("x3dh")
    if prefix == "bob":
        signing = Ed25519PrivateKey.from_private_bytes(_hex(inputs, "bob_signing_private"))
        spk = X25519PrivateKey.from_private_bytes(_hex(inputs, "bob_signed_prekey_private"))
        signed = SignedPrekey(
            inputs["bob_signed_prekey_id"], spk, _hex(inputs, "bob_signed_prekey_signature")
        )
        one_time = X25519PrivateKey.from_private_bytes(_hex(inputs, "bob_one_time_prekey_private"))
        return DeviceKeys(
            X25519PrivateKey.from_private_bytes(_hex(inputs, "bob_identity_private")),
            signing,
            signed,
            {inputs["bob_one_time_prekey_id"]: one_time} if with_one_time else {},
            3,
        )
    signing = Ed25519PrivateKey.from_private_bytes(bytes(32))
    spk = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    return DeviceKeys(
        X25519PrivateKey.from_private_bytes(_hex(inputs, "alice_identity_private")),
        signing,
        SignedPrekey(1, spk, signing.sign(public_bytes(spk))),
        {},
        2,
    )


def _bundle(bob: DeviceKeys) -> x3dh.PrekeyBundle:
    inputs = case("x3dh")
    return x3dh.PrekeyBundle(
        device_id=None,
        identity_key=bob.identity_key,
        signing_key=bob.signing_key,
        signed_prekey_id=inputs["bob_signed_prekey_id"],
        signed_prekey=public_bytes(bob.signed_prekey.private_key),
        signature=bob.signed_prekey.signature,
        one_time_prekey_id=inputs["bob_one_time_prekey_id"],
        one_time_prekey=_pub(_hex(inputs, "bob_one_time_prekey_private")),
    )


def test_the_file_states_its_origin_and_covers_every_step_in_order() -> None:
    assert FILE["generated_by"].startswith("python -m tests.vectors.make_double_ratchet")
    assert FILE["description"]
    assert [item["kind"] for item in FILE["cases"]] == KINDS
    assert all(item["description"] for item in FILE["cases"])


def test_x3dh_secret_and_session_id() -> None:
    inputs = case("x3dh")
    alice, bob = _device_keys("alice", False), _device_keys("bob", True)
    ephemeral = X25519PrivateKey.from_private_bytes(_hex(inputs, "alice_ephemeral_private"))
    secret, header = x3dh.initiate(alice.identity, _bundle(bob), ephemeral=ephemeral)
    assert secret == _hex(inputs, "shared_secret")
    assert x3dh.respond(bob, header) == secret
    assert session_id_for(header) == _hex(inputs, "session_id")


@pytest.mark.parametrize(
    ("kind", "own", "peer"),
    [("initiator_first_chain", "alice", "bob"), ("responder_ratchet_step", "bob", "alice")],
)
def test_root_steps(kind: str, own: str, peer: str) -> None:
    data = case(kind)
    own_private, peer_public = _hex(data, f"{own}_ratchet_private"), _hex(data, f"{peer}_ratchet_public")
    assert _pub(own_private) == _hex(data, f"{own}_ratchet_public")
    assert _dh(own_private, peer_public) == _hex(data, "dh_output")
    expected = (_hex(data, "next_root_key"), _hex(data, "chain_key"))
    assert root_step(_hex(data, "root_key"), _hex(data, "dh_output")) == expected
    assert _root_step(_hex(data, "root_key"), _hex(data, "dh_output")) == expected


def test_the_chain_of_the_root_steps_links_up() -> None:
    """Each step's root key is the previous step's output: the cases are one session."""
    assert case("initiator_first_chain")["root_key"] == case("x3dh")["shared_secret"]
    assert (
        case("initiator_first_chain")["bob_ratchet_public"]
        == _pub(_hex(case("x3dh"), "bob_signed_prekey_private")).hex()
    )
    assert case("responder_ratchet_step")["root_key"] == case("initiator_first_chain")["next_root_key"]
    step = case("initiator_ratchet_step")
    assert step["root_key"] == case("initiator_first_chain")["next_root_key"]
    assert step["root_key_after_receiving"] == case("responder_ratchet_step")["next_root_key"]
    assert step["receiving_chain_key"] == case("responder_ratchet_step")["chain_key"]


def test_the_initiators_dh_ratchet_step() -> None:
    data = case("initiator_ratchet_step")
    a0 = _hex(case("initiator_first_chain"), "alice_ratchet_private")
    b1 = _hex(case("responder_ratchet_step"), "bob_ratchet_public")
    a1 = _hex(data, "alice_ratchet_private")
    assert _pub(a1) == _hex(data, "alice_ratchet_public")
    assert _dh(a0, b1) == _hex(data, "receiving_dh_output")
    assert _dh(a1, b1) == _hex(data, "sending_dh_output")
    received = (_hex(data, "root_key_after_receiving"), _hex(data, "receiving_chain_key"))
    assert root_step(_hex(data, "root_key"), _hex(data, "receiving_dh_output")) == received
    sent = (_hex(data, "next_root_key"), _hex(data, "chain_key"))
    assert root_step(received[0], _hex(data, "sending_dh_output")) == sent
    assert _root_step(received[0], _hex(data, "sending_dh_output")) == sent


def test_message_key() -> None:
    data = case("message_key")
    assert data["chain_key"] == case("initiator_first_chain")["chain_key"]
    expected = (_hex(data, "message_key"), _hex(data, "next_chain_key"))
    assert chain_step(_hex(data, "chain_key")) == expected
    assert _chain_step(_hex(data, "chain_key")) == expected
    assert set(data) == {"kind", "description", "chain_key", "message_key", "next_chain_key"}


MESSAGES = [
    ("session_init", SessionInitHeader.LAYOUT.size, "message_key"),
    ("session_message_reply", SessionMessageHeader.LAYOUT.size, "responder_ratchet_step"),
    ("session_message_new_chain", SessionMessageHeader.LAYOUT.size, "initiator_ratchet_step"),
]


@pytest.mark.parametrize(("kind", "prefix_size", "chain_case"), MESSAGES)
def test_message_frames_and_associated_data_follow_the_description(
    kind: str, prefix_size: int, chain_case: str
) -> None:
    """Frame layout, associated data and AEAD from the description alone, with the message key of
    message 0 of the chain that sent it."""
    data = case(kind)
    sealed = _sealed(data)
    prefix, header = _hex(data, "frame_prefix"), _hex(data, "ratchet_header")
    assert len(prefix) == prefix_size and len(header) == 40
    assert sealed.ciphertext.startswith(prefix + header)
    assert RatchetHeader.decode(sealed.ciphertext, prefix_size).encode() == header
    message_key, _ = _chain_step(_hex(case(chain_case), "chain_key"))
    if chain_case == "message_key":  # the one chain case that records its message key too
        assert message_key == _hex(case(chain_case), "message_key")
    # The nonce is an input, fixed as the description says (production draws it at random).
    assert sealed.nonce == hashlib.sha256(f"veil/vectors/double-ratchet/{kind}-nonce".encode()).digest()[:12]
    ik_a = _pub(_hex(case("x3dh"), "alice_identity_private"))
    ik_b = _pub(_hex(case("x3dh"), "bob_identity_private"))
    ad = (
        _context(data).encode()
        + _length_prefixed(b"veil/session/v2", ik_a, ik_b)
        + _length_prefixed(prefix)
        + _length_prefixed(header)
    )
    assert ad == _hex(data, "associated_data")
    assert session_associated_data(_context(data), ik_a, ik_b, prefix) + _length_prefixed(header) == ad
    body = sealed.ciphertext[prefix_size + 40 :]
    # The message key is the AEAD key as it is; the nonce is the envelope's.
    plaintext = ChaCha20Poly1305(message_key).decrypt(sealed.nonce, body + sealed.tag, ad)
    assert plaintext == _hex(data, "plaintext")
    assert ChaCha20Poly1305(message_key).encrypt(sealed.nonce, plaintext, ad) == body + sealed.tag


def test_the_session_reproduces_every_frame_and_opens_every_recorded_ciphertext() -> None:
    """The whole session with the production code, fed the recorded nonces: the same envelopes,
    byte for byte, and the recorded envelopes (not the recomputed ones) open on the other side."""
    alice, bob = _device_keys("alice", False), _device_keys("bob", True)
    ratchet = {
        kind: _hex(case(kind), key)
        for kind, key in [
            ("initiator_first_chain", "alice_ratchet_private"),
            ("initiator_ratchet_step", "alice_ratchet_private"),
            ("responder_ratchet_step", "bob_ratchet_private"),
            ("session_message_new_chain", "bob_next_ratchet_private"),
        ]
    }
    alice_ratchet = fixed_ratchet_keys(ratchet["initiator_first_chain"], ratchet["initiator_ratchet_step"])
    bob_ratchet = fixed_ratchet_keys(ratchet["responder_ratchet_step"], ratchet["session_message_new_chain"])
    ephemeral = X25519PrivateKey.from_private_bytes(_hex(case("x3dh"), "alice_ephemeral_private"))
    init, reply, again = (
        case("session_init"),
        case("session_message_reply"),
        case("session_message_new_chain"),
    )
    alice_nonces = fixed_nonces(_sealed(init).nonce, _sealed(again).nonce)
    bob_nonces = fixed_nonces(_sealed(reply).nonce)

    alice_session, sealed = PairwiseSession.initiate(
        alice,
        _bundle(bob),
        _context(init),
        _hex(init, "plaintext"),
        ephemeral=ephemeral,
        dh=alice_ratchet,
        aead=alice_nonces,
    )
    assert sealed == _sealed(init)
    recorded = _sealed(init)
    bob_session, plaintext = PairwiseSession.accept(
        bob,
        SessionInitHeader.decode(recorded.ciphertext),
        recorded,
        _context(init),
        dh=bob_ratchet,
        aead=bob_nonces,
    )
    assert plaintext == _hex(init, "plaintext")
    assert bob_session.session_id == alice_session.session_id == _hex(case("x3dh"), "session_id")
    assert bob.one_time_count == 0  # the one-time prekey was consumed

    assert bob_session.encrypt(_context(reply), _hex(reply, "plaintext")) == _sealed(reply)
    assert alice_session.decrypt(_sealed(reply), _context(reply)) == _hex(reply, "plaintext")

    assert alice_session.encrypt(_context(again), _hex(again, "plaintext")) == _sealed(again)
    assert bob_session.decrypt(_sealed(again), _context(again)) == _hex(again, "plaintext")
