"""Known-answer vectors for sender keys v2 (tests/vectors/sender_keys.json): the production code must
reproduce every recorded value and open every recorded envelope, and the layouts the file's
descriptions state must give the same bytes, so another client can implement from the file alone."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from veil.client.protocol.envelope import GroupContext, Sealed
from veil.client.protocol.framing import VERSION, GroupMessageHeader
from veil.client.protocol.ratchet import SendingChain, step
from veil.client.protocol.sender_keys import OwnSenderKey, SenderKeyDistribution, SenderKeyStore

VECTORS = Path(__file__).parents[2] / "vectors" / "sender_keys.json"
FILE = json.loads(VECTORS.read_text(encoding="utf-8"))
KINDS = ("sender_key_distribution", "group_message_header", "sender_key_chain", "group_envelope")
NOW = 1_800_000_000.0


def cases(kind: str) -> list[Any]:
    """The cases of one kind, each as a pytest param named after the case."""
    return [pytest.param(case, id=case["name"]) for case in FILE["cases"] if case["kind"] == kind]


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def test_the_file_says_what_it_is_and_every_case_is_checked() -> None:
    assert "sender keys" in FILE["description"] and "make_sender_keys" in FILE["generated_by"]
    assert {case["kind"] for case in FILE["cases"]} == set(KINDS)
    assert all(case["description"] for case in FILE["cases"])
    assert len({case["name"] for case in FILE["cases"]}) == len(FILE["cases"])


def test_the_vectors_pin_frame_version_2() -> None:
    assert VERSION == 2


@pytest.mark.parametrize("case", cases("sender_key_distribution"))
def test_distribution_frame(case: dict[str, Any]) -> None:
    signing_public_key = (
        Ed25519PrivateKey.from_private_bytes(h(case["signing_private"])).public_key().public_bytes_raw()
    )
    assert signing_public_key.hex() == case["signing_public_key"]
    distribution = SenderKeyDistribution(
        case["conversation_id"],
        case["epoch"],
        h(case["roster_hash"]),
        case["key_id"],
        case["iteration"],
        h(case["chain_key"]),
        signing_public_key,
    )
    frame = h(case["frame"])
    assert distribution.encode() == frame
    assert SenderKeyDistribution.decode(frame) == distribution
    stated = bytes([2, 0x11]) + (
        uuid.UUID(case["conversation_id"]).bytes
        + case["epoch"].to_bytes(8, "big")
        + h(case["roster_hash"])
        + case["key_id"].to_bytes(4, "big")
        + case["iteration"].to_bytes(4, "big")
        + h(case["chain_key"])
        + signing_public_key
    )
    assert stated == frame and len(frame) == 130


@pytest.mark.parametrize("case", cases("group_message_header"))
def test_group_message_header(case: dict[str, Any]) -> None:
    header = h(case["header"])
    assert GroupMessageHeader(case["key_id"], case["iteration"]).encode() == header
    assert GroupMessageHeader.decode(header) == GroupMessageHeader(case["key_id"], case["iteration"])
    assert header == bytes([2, 3]) + struct.pack(">II", case["key_id"], case["iteration"])


@pytest.mark.parametrize("case", cases("sender_key_chain"))
def test_sender_key_chain(case: dict[str, Any]) -> None:
    chain = SendingChain(h(case["chain_key"]))
    produced = {}
    for _ in range(max(case["iterations"]) + 1):
        chain_key = chain.chain_key
        iteration, message_key = chain.next_message_key()
        produced[iteration] = (chain_key.hex(), message_key.hex())
    for position, iteration in enumerate(case["iterations"]):
        assert produced[iteration] == (case["chain_keys"][position], case["message_keys"][position])
    # The stated formula, independently of the production chain.
    chain_key = h(case["chain_key"])
    for iteration in range(max(case["iterations"]) + 1):
        if iteration in case["iterations"]:
            position = case["iterations"].index(iteration)
            assert chain_key.hex() == case["chain_keys"][position]
            assert hmac.digest(chain_key, b"\x01", hashlib.sha256).hex() == case["message_keys"][position]
        chain_key = hmac.digest(chain_key, b"\x02", hashlib.sha256)


def context_of(case: dict[str, Any]) -> GroupContext:
    return GroupContext(
        case["conversation_id"],
        case["message_id"],
        case["sender_id"],
        case["sender_device_id"],
        case["content_type"],
        case["key_epoch"],
        h(case["roster_hash"]),
        case["parent_id"],
    )


def length_prefixed(*fields: bytes) -> bytes:
    return b"".join(len(field).to_bytes(4, "big") + field for field in fields)


@pytest.mark.parametrize("case", cases("group_envelope"))
def test_group_envelope_is_reproduced_by_the_sender(case: dict[str, Any]) -> None:
    own = OwnSenderKey(
        case["conversation_id"],
        case["key_epoch"],
        h(case["roster_hash"]),
        case["key_id"],
        SendingChain(h(case["chain_key"]), case["iteration"]),
        Ed25519PrivateKey.from_private_bytes(h(case["signing_private"])),
        created_at=NOW,
    )
    assert own.distribution().signing_public_key.hex() == case["signing_public_key"]
    # The nonce is the only random input of a group message: fix it to the recorded one.
    with mock.patch("veil.client.protocol.envelope.os.urandom", return_value=h(case["nonce"])):
        sealed = own.encrypt(context_of(case), h(case["plaintext"]))
    assert (sealed.ciphertext.hex(), sealed.nonce.hex(), sealed.tag.hex()) == (
        case["ciphertext"],
        case["nonce"],
        case["tag"],
    )
    wire = {"message_id": case["message_id"], **sealed.to_wire(), "content_type": "text"}
    wire["key_epoch"] = case["key_epoch"]
    if case["parent_id"] is not None:
        wire["parent_id"] = case["parent_id"]
    assert wire == case["wire_envelope"]


@pytest.mark.parametrize("case", cases("group_envelope"))
def test_group_envelope_follows_the_stated_construction(case: dict[str, Any]) -> None:
    message_key, _ = step(h(case["chain_key"]))
    assert message_key.hex() == case["message_key"]
    header = h(case["header"])
    assert header == GroupMessageHeader(case["key_id"], case["iteration"]).encode()
    group_context = h(case["group_context"])
    assert context_of(case).encode() == group_context
    associated_data = group_context + length_prefixed(header)
    assert associated_data.hex() == case["associated_data"]
    sealed = ChaCha20Poly1305(message_key).encrypt(h(case["nonce"]), h(case["plaintext"]), associated_data)
    body, tag = sealed[:-16], sealed[-16:]
    assert (header + body).hex() == case["framed"] and tag.hex() == case["tag"]
    signed = length_prefixed(
        h(case["signature_label"]), group_context, h(case["framed"]), h(case["nonce"]), tag
    )
    assert signed.hex() == case["signed"]
    Ed25519PublicKey.from_public_bytes(h(case["signing_public_key"])).verify(h(case["signature"]), signed)
    assert h(case["ciphertext"]) == h(case["framed"]) + h(case["signature"])


@pytest.mark.parametrize("case", cases("group_envelope"))
def test_group_envelope_opens_for_a_receiver_of_the_key(case: dict[str, Any]) -> None:
    store = SenderKeyStore()
    distribution = SenderKeyDistribution(
        case["conversation_id"],
        case["key_epoch"],
        h(case["roster_hash"]),
        case["key_id"],
        case["iteration"],
        h(case["chain_key"]),
        h(case["signing_public_key"]),
    )
    roster_hash = h(case["roster_hash"])
    assert store.install(case["sender_id"], case["sender_device_id"], distribution, roster_hash, now=NOW)
    stored = {
        **case["wire_envelope"],
        "conversation_id": case["conversation_id"],
        "sender_id": case["sender_id"],
        "sender_device_id": case["sender_device_id"],
    }
    context = GroupContext.from_envelope(stored, roster_hash)
    assert store.decrypt(context, Sealed.from_wire(stored), now=NOW) == h(case["plaintext"])
