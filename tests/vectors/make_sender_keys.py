"""Write tests/vectors/sender_keys.json: known answers for group sender keys v2 (the distribution
frame, the group message header, the chain's message keys and whole signed group envelopes),
computed with the production code from fixed inputs.

Run once (`python -m tests.vectors.make_sender_keys`); the file it writes is the spec other clients
implement against, so it is never regenerated unless a format version changes. Every chain key,
signing key, key id and nonce is fixed here: no randomness reaches the output (the one
`os.urandom` draw of a group message, its nonce, is replaced by the fixed nonce while it is made).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from unittest import mock

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from veil.client.protocol import framing
from veil.client.protocol.codec import length_prefixed
from veil.client.protocol.envelope import GroupContext
from veil.client.protocol.framing import GroupMessageHeader
from veil.client.protocol.ratchet import SendingChain, step
from veil.client.protocol.sender_keys import OwnSenderKey, SenderKeyDistribution

OUTPUT = Path(__file__).with_name("sender_keys.json")
GENERATED_BY = (
    "python -m tests.vectors.make_sender_keys (run once; the file is the spec: never regenerate unless "
    "the format version changes)"
)

DESCRIPTION = """\
Known answers for Veil's group sender keys, frame version 2 (docs/e2ee.md, \
src/veil/client/protocol/sender_keys.py), for anyone writing another client. All bytes are \
lowercase hex; integers are JSON numbers; UUIDs are canonical strings (what is encoded is always \
their 16 raw bytes). Secrets were made as SHA-256("veil/vectors/sender_keys/" || name); Ed25519 \
private keys are given as their 32-byte seed. All integers in frames are big-endian. \
length_prefixed(f1, f2, ...) means u32_be(len(f1)) || f1 || u32_be(len(f2)) || f2 || .... \
A sender key is (key_id u32, chain key, Ed25519 signing key); its chain gives message key \
MK_i = HMAC-SHA256(CK_i, 0x01) and CK_{i+1} = HMAC-SHA256(CK_i, 0x02). Kinds: \
sender_key_distribution (the 130-byte payload of a pairwise `sender_key` device message), \
group_message_header (the 10 bytes in front of every group ciphertext), sender_key_chain \
(message keys at iterations 0, 1 and 5) and group_envelope (a whole signed group message: \
associated data, AEAD, signature and the wire fields). The tests in \
tests/unit/client/test_vectors_sender_keys.py recompute every value with the production code and \
decrypt every ciphertext."""

CONVERSATION_ID = "0b7f3c9e-2d4a-4c6b-9e1f-5a3b7c9d1e2f"
SENDER_ID = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
SENDER_DEVICE_ID = "2b3c4d5e-6f7a-4b9c-8d1e-2f3a4b5c6d7e"
MESSAGE_IDS = ("3c4d5e6f-7a8b-4c0d-9e2f-3a4b5c6d7e8f", "4d5e6f7a-8b9c-4d1e-8f3a-4b5c6d7e8f9a")
PARENT_ID = "5e6f7a8b-9c0d-4e2f-9a4b-5c6d7e8f9a0b"
SIGNATURE_LABEL = b"veil/group-signature/v1"


def fixed_secret(name: str) -> bytes:
    """32 bytes named `name`: SHA-256("veil/vectors/sender_keys/" || name)."""
    return hashlib.sha256(b"veil/vectors/sender_keys/" + name.encode("ascii")).digest()


def chain_key_at(chain_key: bytes, iteration: int) -> bytes:
    for _ in range(iteration):
        _, chain_key = step(chain_key)
    return chain_key


def distribution_case(name: str, *, epoch: int, key_id: int, iteration: int) -> dict[str, Any]:
    chain_key = fixed_secret(f"{name}/chain_key")
    signing_seed = fixed_secret(f"{name}/signing")
    roster_hash = fixed_secret(f"{name}/roster_hash")
    signing_public_key = Ed25519PrivateKey.from_private_bytes(signing_seed).public_key().public_bytes_raw()
    distribution = SenderKeyDistribution(
        CONVERSATION_ID, epoch, roster_hash, key_id, iteration, chain_key, signing_public_key
    )
    return {
        "name": name,
        "kind": "sender_key_distribution",
        "description": (
            "frame = version u8 (2) || type u8 (0x11) || conversation_id[16] || epoch u64 || "
            "roster_hash[32] || key_id u32 || iteration u32 || chain_key[32] || "
            "signing_public_key[32] (130 bytes). chain_key is the chain key at `iteration`: the "
            "receiver can derive the message keys of that iteration and later ones only. "
            "signing_public_key is the raw Ed25519 public key of signing_private."
        ),
        "conversation_id": CONVERSATION_ID,
        "epoch": epoch,
        "roster_hash": roster_hash.hex(),
        "key_id": key_id,
        "iteration": iteration,
        "chain_key": chain_key.hex(),
        "signing_private": signing_seed.hex(),
        "signing_public_key": signing_public_key.hex(),
        "frame": distribution.encode().hex(),
    }


def header_case(name: str, *, key_id: int, iteration: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "group_message_header",
        "description": "header = version u8 (2) || type u8 (3) || key_id u32 || iteration u32 (10 bytes).",
        "key_id": key_id,
        "iteration": iteration,
        "header": GroupMessageHeader(key_id, iteration).encode().hex(),
    }


def chain_case() -> dict[str, Any]:
    chain_key = fixed_secret("chain/chain_key")
    iterations = (0, 1, 5)
    keys = {i: step(chain_key_at(chain_key, i)) for i in iterations}
    return {
        "name": "sender_key_chain",
        "kind": "sender_key_chain",
        "description": (
            "From chain_key = CK_0: for each listed iteration i, chain_keys[i] = CK_i and "
            "message_keys[i] = MK_i = HMAC-SHA256(CK_i, 0x01), where CK_{i+1} = HMAC-SHA256(CK_i, 0x02)."
        ),
        "chain_key": chain_key.hex(),
        "iterations": list(iterations),
        "chain_keys": [chain_key_at(chain_key, i).hex() for i in iterations],
        "message_keys": [keys[i][0].hex() for i in iterations],
    }


def envelope_case(
    name: str, *, message_id: str, iteration: int, epoch: int, parent_id: str | None, plaintext: bytes
) -> dict[str, Any]:
    key_id = int.from_bytes(fixed_secret(f"{name}/key_id")[:4], "big")
    first_chain_key = fixed_secret(f"{name}/chain_key")
    chain_key = chain_key_at(first_chain_key, iteration)
    signing_seed = fixed_secret(f"{name}/signing")
    roster_hash = fixed_secret(f"{name}/roster_hash")
    nonce = fixed_secret(f"{name}/nonce")[:12]
    own = OwnSenderKey(
        CONVERSATION_ID,
        epoch,
        roster_hash,
        key_id,
        SendingChain(chain_key, iteration),
        Ed25519PrivateKey.from_private_bytes(signing_seed),
        created_at=0.0,
    )
    context = GroupContext(
        CONVERSATION_ID, message_id, SENDER_ID, SENDER_DEVICE_ID, "text", epoch, roster_hash, parent_id
    )
    with mock.patch("veil.client.protocol.envelope.os.urandom", return_value=nonce):
        sealed = own.encrypt(context, plaintext)
    header = GroupMessageHeader(key_id, iteration).encode()
    framed, signature = sealed.ciphertext[:-64], sealed.ciphertext[-64:]
    message_key, _ = step(chain_key)
    envelope: dict[str, Any] = {
        "message_id": message_id,
        **sealed.to_wire(),
        "content_type": "text",
        "key_epoch": epoch,
    }
    if parent_id is not None:
        envelope["parent_id"] = parent_id
    return {
        "name": name,
        "kind": "group_envelope",
        "description": (
            "A group message sealed with the sender key (key_id, chain_key = CK at `iteration`, "
            "signing_private). message_key = HMAC-SHA256(chain_key, 0x01). header = the "
            "group_message_header of (key_id, iteration). group_context = the group_context "
            "encoding of the fields below (see primitives.json). associated_data = group_context "
            "|| length_prefixed(header). ChaCha20-Poly1305(message_key, nonce, plaintext, "
            "associated_data) gives body || tag (tag = last 16 bytes). framed = header || body. "
            "signed = length_prefixed(signature_label, group_context, framed, nonce, tag); "
            "signature = Ed25519(signing_private, signed). The wire `ciphertext` is framed || "
            "signature, `auth_tag` is the tag; `wire_envelope` is the POST body (base64 fields). "
            "The nonce is random in production; here it is fixed."
        ),
        "conversation_id": CONVERSATION_ID,
        "message_id": message_id,
        "sender_id": SENDER_ID,
        "sender_device_id": SENDER_DEVICE_ID,
        "content_type": "text",
        "key_epoch": epoch,
        "parent_id": parent_id,
        "roster_hash": roster_hash.hex(),
        "key_id": key_id,
        "iteration": iteration,
        "chain_key": chain_key.hex(),
        "signing_private": signing_seed.hex(),
        "signing_public_key": own.distribution().signing_public_key.hex(),
        "plaintext": plaintext.hex(),
        "nonce": nonce.hex(),
        "message_key": message_key.hex(),
        "header": header.hex(),
        "group_context": context.encode().hex(),
        "associated_data": (context.encode() + length_prefixed(header)).hex(),
        "framed": framed.hex(),
        "tag": sealed.tag.hex(),
        "signature_label": SIGNATURE_LABEL.hex(),
        "signed": length_prefixed(SIGNATURE_LABEL, context.encode(), framed, nonce, sealed.tag).hex(),
        "signature": signature.hex(),
        "ciphertext": sealed.ciphertext.hex(),
        "wire_envelope": envelope,
    }


def build() -> dict[str, Any]:
    """The whole vector file."""
    if framing.VERSION != 2:
        raise RuntimeError("these vectors pin frame version 2")
    return {
        "description": DESCRIPTION,
        "generated_by": GENERATED_BY,
        "cases": [
            distribution_case("distribution_fresh", epoch=0, key_id=0x0000_0001, iteration=0),
            distribution_case("distribution_later", epoch=2**40 + 7, key_id=0xDEAD_BEEF, iteration=5),
            header_case("header_first", key_id=0x0102_0304, iteration=0),
            header_case("header_limits", key_id=0xFFFF_FFFF, iteration=0xFFFF_FFFF),
            chain_case(),
            envelope_case(
                "envelope_first_message",
                message_id=MESSAGE_IDS[0],
                iteration=0,
                epoch=0,
                parent_id=None,
                plaintext=b"Hello, group!",
            ),
            envelope_case(
                "envelope_reply_later",
                message_id=MESSAGE_IDS[1],
                iteration=3,
                epoch=4,
                parent_id=PARENT_ID,
                plaintext="a reply, fourth on this key \u2713".encode(),
            ),
        ],
    }


def main() -> None:
    OUTPUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
