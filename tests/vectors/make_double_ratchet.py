"""Write tests/vectors/double_ratchet.json: known answers for a pairwise session from X3DH through
one Double Ratchet round trip, computed with the production code from fixed inputs.

Run once (`python -m tests.vectors.make_double_ratchet`); the file it writes is the spec other
clients implement against, so it is never regenerated unless a format version changes. Every
private key, id and nonce is fixed here; the X3DH ephemeral key is passed to
`x3dh.initiate(ephemeral=)`, the ratchet keys come from `FixedRatchetKeys` (a `_generate_priv` fed
from a list) and the AEAD nonces, random in production, from `FixedNonces` (a `_generate_nonce` fed
from a list), so no randomness reaches the output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from veil.client.protocol import x3dh
from veil.client.protocol.codec import length_prefixed
from veil.client.protocol.double_ratchet import MessageAEAD, X25519Ratchet, chain_step, root_step
from veil.client.protocol.envelope import DeviceContext, Sealed
from veil.client.protocol.framing import RatchetHeader, SessionInitHeader, SessionMessageHeader
from veil.client.protocol.keys import DeviceKeys, SignedPrekey, public_bytes
from veil.client.protocol.pairwise import PairwiseSession, session_associated_data, session_id_for

OUTPUT = Path(__file__).with_name("double_ratchet.json")
GENERATED_BY = (
    "python -m tests.vectors.make_double_ratchet (run once; the file is the spec: never regenerate "
    "unless the format version changes)"
)

DESCRIPTION = """\
Known answers for Veil's pairwise sessions (frame version 2; docs/e2ee.md): X3DH, then Signal's \
Double Ratchet over X25519 as built by the `doubleratchet` package with Veil's parameters, for \
anyone writing another client. All bytes are lowercase hex; UUIDs are canonical strings (their 16 \
raw bytes are what is authenticated). Private keys were made as \
SHA-256("veil/vectors/double-ratchet/" || name) and are given raw (X25519: the 32-byte scalar before \
clamping; Ed25519: the 32-byte seed). The AEAD nonces are inputs: random (12 bytes from the \
operating system) in production, fixed here as SHA-256("veil/vectors/double-ratchet/" || name)[:12] \
with name "<case kind>-nonce". length_prefixed(f1, f2, ...) = u32_be(len(f1)) || f1 || ...; \
HKDF is RFC 5869 with SHA-256. Root step: RK' || CK = HKDF(salt = RK, ikm = DH output, \
info = "veil/double-ratchet/root/v2", 64 bytes). Chain step: MK = HMAC-SHA256(CK, 0x01), \
CK' = HMAC-SHA256(CK, 0x02). Message: ChaCha20-Poly1305 with key = MK itself, the random nonce, \
and associated data DeviceContext || length_prefixed("veil/session/v2", IK_initiator, IK_responder) || \
length_prefixed(frame prefix) || length_prefixed(ratchet header). Wire ciphertext = frame prefix || \
ratchet header (DHs[32] | pn u32 | n u32) || AEAD ciphertext without its 16-byte tag, which is \
auth_tag; nonce is the AEAD nonce (a receiver takes it from the envelope and checks nothing about \
it beyond its size: the tag authenticates). The cases follow one session in order: x3dh, \
initiator_first_chain, message_key, session_init (Alice -> Bob), responder_ratchet_step, \
session_message_reply (Bob -> Alice), initiator_ratchet_step, session_message_new_chain \
(Alice -> Bob). tests/unit/client/test_vectors_double_ratchet.py recomputes every value with the \
production code and decrypts every ciphertext."""

ALICE_USER_ID = "0a11ce00-0000-4000-8000-000000000001"
ALICE_DEVICE_ID = "0a11ce00-0000-4000-8000-0000000000d1"
BOB_USER_ID = "0b0b0000-0000-4000-8000-000000000002"
BOB_DEVICE_ID = "0b0b0000-0000-4000-8000-0000000000d2"
SIGNED_PREKEY_ID = 1
ONE_TIME_PREKEY_ID = 2


def private(name: str) -> bytes:
    """A fixed private key: SHA-256 of its name."""
    return hashlib.sha256(b"veil/vectors/double-ratchet/" + name.encode()).digest()


def x25519(name: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(private(name))


def fixed_ratchet_keys(*privates: bytes) -> type[X25519Ratchet]:
    """An `X25519Ratchet` whose new ratchet keys are `privates`, in order (vectors only)."""
    queue = list(privates)

    class FixedRatchetKeys(X25519Ratchet):
        @staticmethod
        def _generate_priv() -> bytes:
            return queue.pop(0)

    return FixedRatchetKeys


def fixed_nonces(*nonces: bytes) -> type[MessageAEAD]:
    """A `MessageAEAD` whose nonces are `nonces`, in order (vectors only: production is random)."""
    queue = list(nonces)

    class FixedNonces(MessageAEAD):
        @staticmethod
        def _generate_nonce() -> bytes:
            return queue.pop(0)

    return FixedNonces


def nonce(kind: str) -> bytes:
    """The fixed AEAD nonce of a message case."""
    return private(f"{kind}-nonce")[:12]


def device_keys(prefix: str, *, one_time: bool) -> DeviceKeys:
    """A device's keys, every one fixed (signed prekey id 1, one-time prekey id 2)."""
    signing = Ed25519PrivateKey.from_private_bytes(private(f"{prefix}-signing"))
    spk = x25519(f"{prefix}-signed-prekey")
    signed = SignedPrekey(SIGNED_PREKEY_ID, spk, signing.sign(public_bytes(spk)))
    one_time_keys = {ONE_TIME_PREKEY_ID: x25519(f"{prefix}-one-time-prekey")} if one_time else {}
    return DeviceKeys(x25519(f"{prefix}-identity"), signing, signed, one_time_keys, 3)


def claim(keys: DeviceKeys, device_id: str) -> dict[str, Any]:
    """Bob's claimed bundle as the server returns it (with his one-time prekey)."""
    bundle = keys.public_bundle()
    return {
        "device_id": device_id,
        "identity_key": bundle["identity_key"],
        "signing_key": bundle["signing_key"],
        "signed_prekey": bundle["signed_prekey"],
        "one_time_prekey": bundle["one_time_prekeys"][0],
    }


def dh(private_key: bytes, public_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(public_key)
    )


def pub(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def context_fields(context: DeviceContext) -> dict[str, str]:
    return {
        "recipient_device_id": context.recipient_device_id,
        "sender_id": context.sender_id,
        "sender_device_id": context.sender_device_id,
        "content_type": context.content_type,
    }


def message_case(
    kind: str,
    description: str,
    sealed: Sealed,
    context: DeviceContext,
    plaintext: bytes,
    prefix_size: int,
    initiator_identity_key: bytes,
    responder_identity_key: bytes,
) -> dict[str, Any]:
    prefix = sealed.ciphertext[:prefix_size]
    ratchet_header = sealed.ciphertext[prefix_size : prefix_size + RatchetHeader.LAYOUT.size]
    ad = session_associated_data(context, initiator_identity_key, responder_identity_key, prefix)
    return {
        "kind": kind,
        "description": description,
        "context": context_fields(context),
        "plaintext": plaintext.hex(),
        "frame_prefix": prefix.hex(),
        "ratchet_header": ratchet_header.hex(),
        "associated_data": (ad + length_prefixed(ratchet_header)).hex(),
        "envelope": {
            "device_id": context.recipient_device_id,
            "ciphertext": sealed.ciphertext.hex(),
            "nonce": sealed.nonce.hex(),
            "auth_tag": sealed.tag.hex(),
        },
    }


def build() -> dict[str, Any]:
    alice, bob = device_keys("alice", one_time=False), device_keys("bob", one_time=True)
    ephemeral = x25519("alice-ephemeral")
    a0, a1 = private("alice-ratchet-0"), private("alice-ratchet-1")
    b1, b2 = private("bob-ratchet-1"), private("bob-ratchet-2")
    spk_b = public_bytes(bob.signed_prekey.private_key)

    bundle = x3dh.PrekeyBundle.from_wire(claim(bob, BOB_DEVICE_ID))
    secret, init_header = x3dh.initiate(alice.identity, bundle, ephemeral=ephemeral)
    cases: list[dict[str, Any]] = [
        {
            "kind": "x3dh",
            "description": "Alice (initiator) with Bob's bundle including one-time prekey 2: SK = "
            "HKDF(salt = 32 zero bytes, ikm = 0xFF*32 || DH(IK_a, SPK_b) || DH(EK_a, IK_b) || "
            "DH(EK_a, SPK_b) || DH(EK_a, OPK_b), info = 'Veil X3DH v2', 32 bytes). session_id = "
            "SHA-256('veil/session-id/v2' || 0x00 || IK_a || EK_a)[:16].",
            "alice_identity_private": private("alice-identity").hex(),
            "alice_ephemeral_private": private("alice-ephemeral").hex(),
            "bob_identity_private": private("bob-identity").hex(),
            "bob_signing_private": private("bob-signing").hex(),
            "bob_signed_prekey_private": private("bob-signed-prekey").hex(),
            "bob_signed_prekey_id": SIGNED_PREKEY_ID,
            "bob_signed_prekey_signature": bob.signed_prekey.signature.hex(),
            "bob_one_time_prekey_private": private("bob-one-time-prekey").hex(),
            "bob_one_time_prekey_id": ONE_TIME_PREKEY_ID,
            "shared_secret": secret.hex(),
            "session_id": session_id_for(init_header).hex(),
        }
    ]

    root_1, sending_a0 = root_step(secret, dh(a0, spk_b))
    cases.append(
        {
            "kind": "initiator_first_chain",
            "description": "The initiator's first sending chain: root step from RK = SK with "
            "DH(alice ratchet key 0, Bob's signed prekey), which is Bob's first ratchet key.",
            "root_key": secret.hex(),
            "alice_ratchet_private": a0.hex(),
            "alice_ratchet_public": pub(a0).hex(),
            "bob_ratchet_public": spk_b.hex(),
            "dh_output": dh(a0, spk_b).hex(),
            "next_root_key": root_1.hex(),
            "chain_key": sending_a0.hex(),
        }
    )
    mk, next_ck = chain_step(sending_a0)
    cases.append(
        {
            "kind": "message_key",
            "description": "Message 0 of that chain: MK = HMAC-SHA256(CK, 0x01), next CK = "
            "HMAC-SHA256(CK, 0x02). MK is the ChaCha20-Poly1305 key of that message as it is.",
            "chain_key": sending_a0.hex(),
            "message_key": mk.hex(),
            "next_chain_key": next_ck.hex(),
        }
    )

    to_bob = DeviceContext(BOB_DEVICE_ID, ALICE_USER_ID, ALICE_DEVICE_ID, "session_init")
    hello = b"hello bob"
    alice_session, init_sealed = PairwiseSession.initiate(
        alice,
        bundle,
        to_bob,
        hello,
        ephemeral=ephemeral,
        dh=fixed_ratchet_keys(a0, a1),
        aead=fixed_nonces(nonce("session_init"), nonce("session_message_new_chain")),
    )
    cases.append(
        message_case(
            "session_init",
            "Alice's session_init (75-byte prefix, ratchet header DHs = alice ratchet key 0, "
            "pn = 0, n = 0) carrying the plaintext, encrypted with the message key above and the "
            "nonce in the envelope.",
            init_sealed,
            to_bob,
            hello,
            SessionInitHeader.LAYOUT.size,
            alice.identity_key,
            bob.identity_key,
        )
    )

    bob_session, _ = PairwiseSession.accept(
        bob,
        SessionInitHeader.decode(init_sealed.ciphertext),
        init_sealed,
        to_bob,
        dh=fixed_ratchet_keys(b1, b2),
        aead=fixed_nonces(nonce("session_message_reply")),
    )
    # Bob's side of the initiator's first chain is the same root step.
    assert root_step(secret, dh(bob.signed_prekey.private_key.private_bytes_raw(), pub(a0))) == (
        root_1,
        sending_a0,
    )
    root_2, sending_b1 = root_step(root_1, dh(b1, pub(a0)))
    cases.append(
        {
            "kind": "responder_ratchet_step",
            "description": "Bob, on accepting: his receiving chain is the initiator's first chain "
            "(root step from SK with DH(signed prekey, alice ratchet key 0)); then one DH ratchet "
            "step with his new ratchet key 1: root step from that next root key with "
            "DH(bob ratchet key 1, alice ratchet key 0) gives his first sending chain.",
            "root_key": root_1.hex(),
            "bob_ratchet_private": b1.hex(),
            "bob_ratchet_public": pub(b1).hex(),
            "alice_ratchet_public": pub(a0).hex(),
            "dh_output": dh(b1, pub(a0)).hex(),
            "next_root_key": root_2.hex(),
            "chain_key": sending_b1.hex(),
        }
    )

    to_alice = DeviceContext(ALICE_DEVICE_ID, BOB_USER_ID, BOB_DEVICE_ID, "session_message")
    reply = b"hi alice"
    reply_sealed = bob_session.encrypt(to_alice, reply)
    cases.append(
        message_case(
            "session_message_reply",
            "Bob's reply: a session_message (18-byte prefix with the session id; DHs = bob "
            "ratchet key 1, pn = 0, n = 0), message 0 of the chain above.",
            reply_sealed,
            to_alice,
            reply,
            SessionMessageHeader.LAYOUT.size,
            alice.identity_key,
            bob.identity_key,
        )
    )

    assert alice_session.decrypt(reply_sealed, to_alice) == reply
    # Alice's root key is still root_1: the same DH output gives her the same root_2 and Bob's chain.
    assert root_step(root_1, dh(a0, pub(b1))) == (root_2, sending_b1)
    root_3, sending_a1 = root_step(root_2, dh(a1, pub(b1)))
    cases.append(
        {
            "kind": "initiator_ratchet_step",
            "description": "Alice, on receiving the reply: root step with DH(alice ratchet key 0, "
            "bob ratchet key 1) gives her receiving chain (Bob's sending chain), then root step "
            "with DH(alice ratchet key 1, bob ratchet key 1) her second sending chain.",
            "root_key": root_1.hex(),
            "receiving_dh_output": dh(a0, pub(b1)).hex(),
            "root_key_after_receiving": root_2.hex(),
            "receiving_chain_key": sending_b1.hex(),
            "alice_ratchet_private": a1.hex(),
            "alice_ratchet_public": pub(a1).hex(),
            "sending_dh_output": dh(a1, pub(b1)).hex(),
            "next_root_key": root_3.hex(),
            "chain_key": sending_a1.hex(),
        }
    )

    to_bob_again = DeviceContext(BOB_DEVICE_ID, ALICE_USER_ID, ALICE_DEVICE_ID, "session_message")
    again = b"how are you?"
    again_sealed = alice_session.encrypt(to_bob_again, again)
    assert bob_session.decrypt(again_sealed, to_bob_again) == again
    cases.append(
        message_case(
            "session_message_new_chain",
            "Alice's next message, on her second chain: DHs = alice ratchet key 1, pn = 1 (her "
            "first chain sent one message), n = 0. Bob makes bob ratchet key 2 when he receives it.",
            again_sealed,
            to_bob_again,
            again,
            SessionMessageHeader.LAYOUT.size,
            alice.identity_key,
            bob.identity_key,
        )
        | {"bob_next_ratchet_private": b2.hex()}
    )
    return {"description": DESCRIPTION, "generated_by": GENERATED_BY, "cases": cases}


def main() -> None:
    OUTPUT.write_text(json.dumps(build(), indent=2) + "\n")


if __name__ == "__main__":
    main()
