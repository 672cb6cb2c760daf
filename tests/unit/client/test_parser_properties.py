"""Property tests of every parser that reads bytes or JSON a peer, the server or the disk controls.

Each parser has one documented error type; on any input it returns a value or raises that type,
never a stray IndexError, KeyError, TypeError, struct.error or UnicodeDecodeError, which would
escape callers that catch the documented type (and crash a chat screen or a sync loop). Inputs are
random bytes or JSON values, and valid encodings with random damage (flipped bytes, truncation,
extra bytes, replaced or missing members), which reach much deeper than random bytes alone; whole
pairwise messages go through `decrypt_device_message`, Double Ratchet included. The round-trip
tests check that every encoder's output parses back to the same value.

Runs are deterministic (`derandomize=True`, no example database): the same examples every time.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.unit.client.support import NOW, Directory, connect, new_device, stored
from veil.client.protocol.attachments import FileReference
from veil.client.protocol.commit import ACTIONS, ASSIGNABLE_ROLES, Commit, make_commit
from veil.client.protocol.envelope import GroupContext, Sealed
from veil.client.protocol.errors import (
    CryptoError,
    DecryptionError,
    InvalidBundleError,
    KeystoreError,
    MalformedMessageError,
    MembershipError,
)
from veil.client.protocol.framing import (
    VERSION,
    FrameType,
    GroupMessageHeader,
    RatchetHeader,
    SenderKeyDistributionFrame,
    SessionInitHeader,
    SessionMessageHeader,
)
from veil.client.protocol.identity import (
    LinkPayload,
    MasterKey,
    decode_link_payload,
    encode_link_payload,
    is_acceptable_master_key,
    link_code,
    link_digest,
    parse_link_code,
    parse_safety_number_qr,
    verify_certificate,
)
from veil.client.protocol.sender_keys import SenderKeyDistribution
from veil.client.protocol.session import ClientCrypto
from veil.client.protocol.trust import ListedDevice, TrustStore
from veil.client.protocol.x3dh import PrekeyBundle
from veil.client.sdk.keystore import MAGIC, ScryptParams, decrypt_state, encrypt_state

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None)
FEW = settings(PROPERTY, max_examples=40)

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
UUIDS = st.uuids().map(str)


def key_bytes(size: int = 32) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def refuses_only(error: type[Exception], parse: Callable[[], object]) -> None:
    """Run `parse`; its documented `error` is an acceptable answer, any other exception fails."""
    with contextlib.suppress(error):
        parse()


def refuses_or_must_refuse(
    genuine: Mapping[str, Any], damaged: Mapping[str, Any], deliver: Callable[[], object]
) -> None:
    """A message whose binary fields differ from the genuine one's must be refused (any change to
    them breaks authentication); otherwise (members added or dropped) only CryptoError may come."""
    binary = ("ciphertext", "nonce", "auth_tag")
    if any(damaged.get(field) != genuine[field] for field in binary):
        with pytest.raises(CryptoError):
            deliver()
    else:
        refuses_only(CryptoError, deliver)


# --- Strategies: damaged encodings ----------------------------------------------------------------


@st.composite
def damaged(draw: st.DrawFn, valid: bytes, *, keep: int = 0) -> bytes:
    """`valid` with one to three edits: a flipped byte, a cut, bytes appended (the first `keep`
    bytes are left alone, e.g. expensive KDF parameters)."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["flip", "flip", "cut", "append"]))
        if edit == "flip" and len(data) > keep:
            data[draw(st.integers(keep, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif edit == "cut":
            del data[draw(st.integers(keep, len(data))) :]
        else:  # "append", or a flip with nothing left to flip
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def bytes_or_damaged(valid: bytes, *, max_size: int | None = None) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=max_size or len(valid) + 16), damaged(valid))


def framed(frame_type: int, size: int) -> st.SearchStrategy[bytes]:
    """Bytes that start like a frame (this or another version and type), around `size` long."""
    return st.builds(
        lambda version, kind, rest: bytes([version, kind]) + rest,
        st.sampled_from([VERSION, 1, 0, 255]),
        st.one_of(st.just(frame_type), st.sampled_from(list(FrameType)), st.integers(0, 255)),
        st.binary(min_size=max(0, size - 6), max_size=size + 4),
    )


# --- Strategies: JSON values and damaged mappings -------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=24),
    st.binary(max_size=40).map(b64),  # base64, but of the wrong size (or not canonical by accident)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=6,
)


EDGE_INTEGERS = st.sampled_from([-1, 0, 2**32 - 1, 2**32, 2**64 - 1, 2**64, True, 1.0])


@st.composite
def damaged_value(draw: st.DrawFn, value: Any) -> Any:
    """`value` damaged in a way that fits its kind, so the parser gets past its outer checks."""
    if isinstance(value, Mapping):
        return draw(damaged_mapping(value))
    if isinstance(value, list):
        if not value:
            return [draw(JSON_VALUES)]
        index = draw(st.integers(0, len(value) - 1))
        return [*value[:index], draw(damaged_value(value[index])), *value[index + 1 :]]
    if isinstance(value, str):
        return draw(st.one_of(st.binary(max_size=70).map(b64), st.text(max_size=40), st.just(value.upper())))
    return draw(st.one_of(EDGE_INTEGERS, JSON_VALUES))


@st.composite
def damaged_mapping(draw: st.DrawFn, template: Mapping[str, Any]) -> dict[str, Any]:
    """`template` with one to three edits: a member dropped, added, replaced by random JSON, or
    damaged inside."""
    result = dict(template)
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["drop", "add", "replace", "deeper", "deeper", "deeper"]))
        if edit == "add" or not result:
            result[draw(st.text(max_size=12))] = draw(JSON_VALUES)
            continue
        key = draw(st.sampled_from(sorted(result)))
        if edit == "drop":
            del result[key]
        elif edit == "replace":
            result[key] = draw(JSON_VALUES)
        else:
            result[key] = draw(damaged_value(result[key]))
    return result


def mapping_or_damaged(template: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.dictionaries(st.text(max_size=16), JSON_VALUES, max_size=6), damaged_mapping(template)
    )


# --- Fixed valid encodings (no randomness: the same templates every run) --------------------------

ALICE_ID = "11111111-2222-4333-8444-555555555555"
BOB_ID = "66666666-7777-4888-9999-aaaaaaaaaaaa"
DEVICE_ID = "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff"
SIGNING = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
MASTER = MasterKey.from_private_bytes(bytes(range(32, 64)))
OTHER_MASTER = MasterKey.from_private_bytes(bytes(range(64, 96)))

SESSION_INIT = SessionInitHeader(bytes(range(32)), bytes(range(32, 64)), 7, 9)
SESSION_MESSAGE = SessionMessageHeader(bytes(range(16)))
RATCHET = RatchetHeader(bytes(range(32)), 3, 4)
GROUP_MESSAGE = GroupMessageHeader(5, 6)
DISTRIBUTION = SenderKeyDistribution(ALICE_ID, 2, bytes(32), 11, 12, bytes(range(32)), bytes(range(32, 64)))
SEALED_WIRE = Sealed(b"framed ciphertext", bytes(12), bytes(16)).to_wire()
BUNDLE_WIRE = {
    "device_id": DEVICE_ID,
    "identity_key": b64(bytes(range(32))),
    "signing_key": b64(bytes(range(32, 64))),
    "signed_prekey": {"key_id": 1, "public_key": b64(bytes(32)), "signature": b64(bytes(64))},
    "one_time_prekey": {"key_id": 2, "public_key": b64(bytes(range(1, 33)))},
}
FILE_REFERENCE = FileReference(ALICE_ID, bytes(32), bytes(32), 1234, "holiday.jpg", 1200)
COMMIT = make_commit(
    conversation_id=BOB_ID,
    epoch=3,
    action="role_changed",
    actor_id=ALICE_ID,
    actor_device_id=DEVICE_ID,
    signing=SIGNING,
    identity_key=bytes(range(32)),
    certificate=bytes(64),
    subject_id=BOB_ID,
    role="admin",
    roster_hash=bytes(32),
    previous_hash=bytes(range(32)),
)
LINK_CODE = link_code(DEVICE_ID, bytes(32), bytes(range(32)), secret=bytes(range(10)))
LINK_PAYLOAD = encode_link_payload(LinkPayload(MASTER.public_key, MASTER.private_bytes(), bytes(32)))
LISTED_DEVICE = {
    "device_id": DEVICE_ID,
    "identity_key": b64(bytes(32)),
    "signing_key": b64(bytes(range(32))),
    "certificate": {"signature": b64(bytes(64))},
}
ENVELOPE = {
    "conversation_id": BOB_ID,
    "message_id": ALICE_ID,
    "sender_id": ALICE_ID,
    "sender_device_id": DEVICE_ID,
    "content_type": "text",
    "key_epoch": 4,
    "parent_id": BOB_ID,
}


def _trust_state() -> dict[str, Any]:
    store = TrustStore(ALICE_ID, MASTER)
    store.observe(BOB_ID, OTHER_MASTER.public_key)
    store.observe(BOB_ID, MASTER.public_key)  # a pending change, so every member is filled in
    return store.to_state()


TRUST_STATE = _trust_state()

# The keystore's KDF parameters are read before anything is authenticated: random ones could cost
# gigabytes, so inputs with the magic use cheap or out-of-range values only.
CHEAP = ScryptParams(log2_n=10, r=1, p=1)
PASSPHRASE = "correct horse battery staple"


@contextlib.contextmanager
def _fixed_urandom(*draws: bytes) -> Iterator[None]:
    with mock.patch("veil.client.sdk.keystore.os.urandom", side_effect=list(draws)):
        yield


with _fixed_urandom(bytes(range(16)), bytes(range(12))):
    KEYSTORE_BLOB = encrypt_state({"version": 3, "keys": {"a": [1, 2]}}, PASSPHRASE, CHEAP)
_KEYSTORE_PARAMS_END = len(MAGIC) + 4


# --- Frames: only MalformedMessageError -----------------------------------------------------------


@PROPERTY
@given(
    st.one_of(framed(FrameType.SESSION_INIT, SessionInitHeader.LAYOUT.size), damaged(SESSION_INIT.encode()))
)
def test_session_init_header_raises_only_malformed_message(data: bytes) -> None:
    refuses_only(MalformedMessageError, lambda: SessionInitHeader.decode(data))


@PROPERTY
@given(
    st.one_of(
        framed(FrameType.SESSION_MESSAGE, SessionMessageHeader.LAYOUT.size),
        damaged(SESSION_MESSAGE.encode()),
    )
)
def test_session_message_header_raises_only_malformed_message(data: bytes) -> None:
    refuses_only(MalformedMessageError, lambda: SessionMessageHeader.decode(data))


@PROPERTY
@given(st.data())
def test_ratchet_header_raises_only_malformed_message(data: st.DataObject) -> None:
    prefix = SESSION_MESSAGE.encode()
    frame = data.draw(bytes_or_damaged(prefix + RATCHET.encode()))
    offset = data.draw(st.sampled_from([0, len(prefix), len(frame)]))
    refuses_only(MalformedMessageError, lambda: RatchetHeader.decode(frame, offset))


@PROPERTY
@given(
    st.one_of(
        framed(FrameType.GROUP_MESSAGE, GroupMessageHeader.LAYOUT.size), damaged(GROUP_MESSAGE.encode())
    )
)
def test_group_message_header_raises_only_malformed_message(data: bytes) -> None:
    refuses_only(MalformedMessageError, lambda: GroupMessageHeader.decode(data))


@PROPERTY
@given(
    st.one_of(
        framed(FrameType.SENDER_KEY_DISTRIBUTION, SenderKeyDistributionFrame.LAYOUT.size),
        damaged(DISTRIBUTION.encode()),
    )
)
def test_sender_key_distribution_raises_only_malformed_message(data: bytes) -> None:
    refuses_only(MalformedMessageError, lambda: SenderKeyDistribution.decode(data))


# --- Envelopes, bundles, file references ----------------------------------------------------------


@PROPERTY
@given(mapping_or_damaged(SEALED_WIRE))
def test_sealed_from_wire_raises_only_decryption_error(data: dict[str, Any]) -> None:
    refuses_only(DecryptionError, lambda: Sealed.from_wire(data))


@PROPERTY
@given(mapping_or_damaged(BUNDLE_WIRE))
def test_prekey_bundle_from_wire_raises_only_invalid_bundle(data: dict[str, Any]) -> None:
    refuses_only(InvalidBundleError, lambda: PrekeyBundle.from_wire(data))


@PROPERTY
@given(mapping_or_damaged(ENVELOPE), st.one_of(key_bytes(), st.binary(max_size=40)))
def test_group_context_from_envelope_raises_only_value_error(data: dict[str, Any], roster: bytes) -> None:
    refuses_only(ValueError, lambda: GroupContext.from_envelope(data, roster))


@PROPERTY
@given(
    st.one_of(
        bytes_or_damaged(FILE_REFERENCE.encode()),
        mapping_or_damaged(json.loads(FILE_REFERENCE.encode())).map(lambda value: json.dumps(value).encode()),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    )
)
@example(b'{"name": "\\ud800"}')  # a lone surrogate: json accepts it, UTF-8 cannot encode it
def test_file_reference_raises_only_malformed_message(data: bytes) -> None:
    refuses_only(MalformedMessageError, lambda: FileReference.decode(data))


def test_file_reference_refuses_deeply_nested_json() -> None:
    with pytest.raises(MalformedMessageError):
        FileReference.decode(b"[" * 100_000)


# --- Keystore -------------------------------------------------------------------------------------


@st.composite
def keystore_like(draw: st.DrawFn) -> bytes:
    """Bytes with the keystore magic, a cheap or out-of-range KDF header and a random rest."""
    version = draw(st.sampled_from([1, 0, 2, 255]))
    log2_n = draw(st.sampled_from([10, 0, 9, 23, 255]))
    r = draw(st.sampled_from([1, 0, 33, 255]))
    p = draw(st.sampled_from([1, 0, 17, 255]))
    return MAGIC + bytes([version, log2_n, r, p]) + draw(st.binary(max_size=80))


@FEW
@given(
    st.one_of(
        st.binary(max_size=80),
        keystore_like(),
        damaged(KEYSTORE_BLOB, keep=_KEYSTORE_PARAMS_END),
    )
)
def test_keystore_decrypt_raises_only_keystore_errors(data: bytes) -> None:
    refuses_only(KeystoreError, lambda: decrypt_state(data, PASSPHRASE))


def test_keystore_refuses_an_unencodable_passphrase_with_a_keystore_error() -> None:
    with pytest.raises(KeystoreError):
        decrypt_state(KEYSTORE_BLOB, "caf\udce9")  # the escaped byte of a non-UTF-8 environment
    with pytest.raises(KeystoreError):
        decrypt_state(KEYSTORE_BLOB, "caf\ud800")  # a lone surrogate no encoding can write


# --- Commits, certificates, link codes, trust state -----------------------------------------------


@PROPERTY
@given(bytes_or_damaged(COMMIT, max_size=400))
def test_commit_parse_raises_only_membership_error(data: bytes) -> None:
    refuses_only(MembershipError, lambda: Commit.parse(data))


@PROPERTY
@given(
    st.one_of(st.binary(max_size=80), key_bytes()),
    st.one_of(UUIDS, key_bytes(16), st.text(max_size=40), st.binary(max_size=20)),
    st.one_of(UUIDS, key_bytes(16), st.text(max_size=40)),
    st.binary(max_size=40),
    st.binary(max_size=40),
    st.one_of(st.none(), key_bytes(64), st.binary(max_size=80)),
)
def test_certificate_verification_is_a_boolean_and_never_raises(
    master: bytes, user_id: str | bytes, device_id: str | bytes, ik: bytes, sk: bytes, signature: bytes | None
) -> None:
    assert verify_certificate(master, user_id, device_id, ik, sk, signature) is False
    assert isinstance(is_acceptable_master_key(master), bool)


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZOILU-vl ", max_size=80).map(lambda s: "VL1-" + s),
        st.builds(
            lambda code, cut, extra: code[:cut] + extra,
            st.just(LINK_CODE),
            st.integers(0, len(LINK_CODE)),
            st.text(max_size=4),
        ),
    )
)
def test_link_code_parse_raises_only_value_error(text: str) -> None:
    refuses_only(ValueError, lambda: parse_link_code(text))


@PROPERTY
@given(bytes_or_damaged(LINK_PAYLOAD))
def test_link_payload_decode_raises_only_malformed_message(data: bytes) -> None:
    refuses_only(MalformedMessageError, lambda: decode_link_payload(data))


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=80), st.text(alphabet="0123456789 ", max_size=70).map(lambda s: "VEIL-SN1:" + s)
    )
)
def test_safety_number_qr_parse_raises_only_value_error(text: str) -> None:
    refuses_only(ValueError, lambda: parse_safety_number_qr(text))


@PROPERTY
@given(mapping_or_damaged(LISTED_DEVICE))
def test_listed_device_from_api_raises_only_value_error(data: dict[str, Any]) -> None:
    refuses_only(ValueError, lambda: ListedDevice.from_api(data))


@PROPERTY
@given(mapping_or_damaged(TRUST_STATE))
def test_trust_store_from_state_raises_only_value_error(data: dict[str, Any]) -> None:
    refuses_only(ValueError, lambda: TrustStore.from_state(data))


# --- Whole pairwise and group messages: only CryptoError ------------------------------------------
# The frames above are parsed inside `decrypt_device_message`, which also drives the Double Ratchet
# library: none of its own exceptions may escape either. (The devices' keys are random, made once
# per run; the damage done to their messages is the same every run.)


class _Pairwise:
    """Alice's `session_init` and the `session_message` after it, and Bob's state before each."""

    def __init__(self) -> None:
        directory = Directory()
        self.alice, bob = new_device(), new_device()
        directory.publish(bob)
        self.bob_before_init = bob.to_state()
        self.init = self.alice.start_session(bob.user_id, bob.device_id, directory.claim(bob), b"hi")
        self.follow_up = self.alice.encrypt_for_device(bob.user_id, bob.device_id, b"and more")
        bob.decrypt_device_message(self.alice.user_id, self.alice.device_id, "session_init", self.init)
        self.bob_after_init = bob.to_state()

    def deliver(self, content_type: str, message: Mapping[str, Any]) -> bytes:
        """Open `message` on a fresh copy of Bob, in the state the genuine message found him in."""
        state = self.bob_before_init if content_type == "session_init" else self.bob_after_init
        bob = ClientCrypto.from_state(json.loads(json.dumps(state)))
        return bob.decrypt_device_message(self.alice.user_id, self.alice.device_id, content_type, message)


PAIRWISE = _Pairwise()


def _with_ciphertext(message: Mapping[str, Any], ciphertext: bytes) -> dict[str, Any]:
    return {**message, "ciphertext": b64(ciphertext)}


@st.composite
def damaged_device_message(draw: st.DrawFn, message: Mapping[str, Any]) -> dict[str, Any]:
    """A device message or group envelope with its framed ciphertext, nonce or tag damaged, or
    its members."""
    target = draw(st.sampled_from(["ciphertext", "ciphertext", "nonce", "auth_tag", "mapping"]))
    if target == "mapping":
        return draw(damaged_mapping(message))
    raw = base64.b64decode(message[target])
    return {**message, target: b64(draw(damaged(raw)))}


@FEW
@given(
    st.sampled_from(["session_init", "session_message"]).flatmap(
        lambda kind: st.tuples(
            st.just(kind),
            damaged_device_message(PAIRWISE.init if kind == "session_init" else PAIRWISE.follow_up),
        )
    )
)
def test_damaged_pairwise_messages_raise_only_crypto_errors(delivery: tuple[str, dict[str, Any]]) -> None:
    content_type, message = delivery
    genuine = PAIRWISE.init if content_type == "session_init" else PAIRWISE.follow_up
    refuses_or_must_refuse(genuine, message, lambda: PAIRWISE.deliver(content_type, message))


# Fields an attacker would pick rather than stumble on: low-order (all-zero) X25519 keys where the
# frame carries a public key, and counters at their maximum (a skip far beyond MAX_SKIP).
_SESSION_INIT_FIELDS = {"identity_key": (2, 34), "ephemeral_key": (34, 66), "ratchet_key": (75, 107)}
_SESSION_MESSAGE_FIELDS = {"ratchet_key": (18, 50)}
_COUNTERS = {"session_init": (107, 115), "session_message": (50, 58)}


@pytest.mark.parametrize(
    ("content_type", "field"),
    [
        *(("session_init", name) for name in _SESSION_INIT_FIELDS),
        *(("session_message", name) for name in _SESSION_MESSAGE_FIELDS),
        ("session_init", "counters"),
        ("session_message", "counters"),
    ],
)
def test_chosen_pairwise_frame_fields_are_refused_as_crypto_errors(content_type: str, field: str) -> None:
    message = PAIRWISE.init if content_type == "session_init" else PAIRWISE.follow_up
    frame = bytearray(base64.b64decode(message["ciphertext"]))
    if field == "counters":
        start, end = _COUNTERS[content_type]
        frame[start:end] = b"\xff" * (end - start)
    else:
        fields = _SESSION_INIT_FIELDS if content_type == "session_init" else _SESSION_MESSAGE_FIELDS
        start, end = fields[field]
        frame[start:end] = bytes(end - start)
    with pytest.raises(CryptoError):
        PAIRWISE.deliver(content_type, _with_ciphertext(message, bytes(frame)))


def test_the_undamaged_pairwise_messages_open() -> None:
    assert PAIRWISE.deliver("session_init", PAIRWISE.init) == b"hi"
    assert PAIRWISE.deliver("session_message", PAIRWISE.follow_up) == b"and more"


class _Group:
    """A group message from Alice, and Bob's state once he holds her sender key."""

    conversation_id = "c0c0c0c0-1111-4222-8333-444444444444"

    def __init__(self) -> None:
        directory = Directory()
        alice, bob = new_device(), new_device()
        connect(directory, alice, bob)
        self.roster = hashlib.sha256(b"a roster view").digest()
        devices = [(bob.user_id, bob.device_id)]
        (message,) = alice.sender_key_messages(self.conversation_id, 0, self.roster, devices, now=NOW)
        payload = bob.decrypt_device_message(alice.user_id, alice.device_id, "sender_key", message)
        distribution = SenderKeyDistribution.decode(payload)
        assert bob.install_sender_key(alice.user_id, alice.device_id, distribution, self.roster, now=NOW)
        self.bob_state = bob.to_state()
        sent = alice.encrypt_group_message(
            self.conversation_id, 0, BOB_ID, "text", b"to the group", roster_hash=self.roster, now=NOW
        )
        self.envelope = stored(sent, self.conversation_id, alice)

    def deliver(self, envelope: Mapping[str, Any]) -> bytes:
        bob = ClientCrypto.from_state(json.loads(json.dumps(self.bob_state)))
        return bob.decrypt_group_message(envelope, self.roster, now=NOW)


GROUP = _Group()


@FEW
@given(damaged_device_message(GROUP.envelope))
def test_damaged_group_messages_raise_only_crypto_errors(envelope: dict[str, Any]) -> None:
    refuses_or_must_refuse(GROUP.envelope, envelope, lambda: GROUP.deliver(envelope))


def test_the_undamaged_group_message_opens() -> None:
    assert GROUP.deliver(GROUP.envelope) == b"to the group"


# --- Round trips ----------------------------------------------------------------------------------


@PROPERTY
@given(st.builds(SessionInitHeader, key_bytes(), key_bytes(), U32, st.none() | U32))
def test_session_init_header_round_trip(header: SessionInitHeader) -> None:
    assert SessionInitHeader.decode(header.encode()) == header


@PROPERTY
@given(st.builds(SessionMessageHeader, key_bytes(16)), st.builds(RatchetHeader, key_bytes(), U32, U32))
def test_session_message_and_ratchet_header_round_trip(
    header: SessionMessageHeader, ratchet: RatchetHeader
) -> None:
    frame = header.encode() + ratchet.encode()
    assert SessionMessageHeader.decode(frame) == header
    assert RatchetHeader.decode(frame, len(header.encode())) == ratchet


@PROPERTY
@given(st.builds(GroupMessageHeader, U32, U32))
def test_group_message_header_round_trip(header: GroupMessageHeader) -> None:
    assert GroupMessageHeader.decode(header.encode()) == header


@PROPERTY
@given(st.builds(SenderKeyDistribution, UUIDS, U64, key_bytes(), U32, U32, key_bytes(), key_bytes()))
def test_sender_key_distribution_round_trip(distribution: SenderKeyDistribution) -> None:
    assert SenderKeyDistribution.decode(distribution.encode()) == distribution


@PROPERTY
@given(st.builds(Sealed, st.binary(min_size=1, max_size=300), key_bytes(12), key_bytes(16)))
def test_sealed_wire_round_trip(sealed: Sealed) -> None:
    assert Sealed.from_wire(sealed.to_wire()) == sealed


@PROPERTY
@given(
    st.builds(PrekeyBundle, st.none() | UUIDS, key_bytes(), key_bytes(), U32, key_bytes(), key_bytes(64)),
    st.none() | st.tuples(U32, key_bytes()),
)
def test_prekey_bundle_wire_round_trip(bundle: PrekeyBundle, one_time: tuple[int, bytes] | None) -> None:
    if one_time is not None:
        bundle = dataclasses.replace(bundle, one_time_prekey_id=one_time[0], one_time_prekey=one_time[1])
    wire = {
        "device_id": bundle.device_id,
        "identity_key": b64(bundle.identity_key),
        "signing_key": b64(bundle.signing_key),
        "signed_prekey": {
            "key_id": bundle.signed_prekey_id,
            "public_key": b64(bundle.signed_prekey),
            "signature": b64(bundle.signature),
        },
        "one_time_prekey": None
        if one_time is None
        else {"key_id": one_time[0], "public_key": b64(one_time[1])},
    }
    assert PrekeyBundle.from_wire(wire) == bundle


FILE_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/\0"), min_size=0, max_size=60
)


@PROPERTY
@given(st.builds(FileReference, UUIDS, key_bytes(), key_bytes(), U64, FILE_NAMES, U64))
def test_file_reference_round_trip(reference: FileReference) -> None:
    assert FileReference.decode(reference.encode()) == reference


@st.composite
def commits(draw: st.DrawFn) -> bytes:
    action = draw(st.sampled_from(ACTIONS))
    return make_commit(
        conversation_id=draw(UUIDS),
        epoch=draw(U64),
        action=action,
        actor_id=draw(UUIDS),
        actor_device_id=draw(UUIDS),
        signing=SIGNING,
        identity_key=draw(key_bytes()),
        certificate=draw(key_bytes(64)),
        subject_id=draw(UUIDS),
        role=draw(st.sampled_from(ASSIGNABLE_ROLES)) if action == "role_changed" else "",
        roster_hash=draw(key_bytes()),
        previous_hash=draw(key_bytes()),
    )


@FEW
@given(commits())
def test_commit_round_trip(commit: bytes) -> None:
    parsed = Commit.parse(commit)
    assert parsed.encode() == commit
    assert parsed.signature_verifies()


@PROPERTY
@given(
    UUIDS,
    key_bytes(),
    key_bytes(),
    key_bytes(10),
    st.sampled_from([str, str.lower, lambda s: s.replace("-", " ")]),
)
def test_link_code_round_trip(
    device_id: str, identity_key: bytes, signing_key: bytes, secret: bytes, respell: Callable[[str], str]
) -> None:
    code = link_code(device_id, identity_key, signing_key, secret=secret)
    assert parse_link_code(respell(code)) == (device_id, link_digest(identity_key, signing_key), secret)


@FEW
@given(key_bytes(), st.booleans(), key_bytes())
def test_link_payload_round_trip(seed: bytes, primary: bool, proof: bytes) -> None:
    master = MasterKey.from_private_bytes(seed)
    payload = LinkPayload(master.public_key, master.private_bytes() if primary else None, proof)
    assert decode_link_payload(encode_link_payload(payload)) == payload


KEYSTORE_STATES = st.dictionaries(
    st.text(max_size=12),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=5,
)


@settings(FEW, max_examples=15)
@given(KEYSTORE_STATES)
def test_keystore_round_trip(state: dict[str, Any]) -> None:
    assert decrypt_state(encrypt_state(state, PASSPHRASE, CHEAP), PASSPHRASE) == state


def test_templates_are_valid_so_damage_starts_from_real_encodings() -> None:
    assert SessionInitHeader.decode(SESSION_INIT.encode()) == SESSION_INIT
    assert SessionMessageHeader.decode(SESSION_MESSAGE.encode()) == SESSION_MESSAGE
    assert RatchetHeader.decode(RATCHET.encode(), 0) == RATCHET
    assert GroupMessageHeader.decode(GROUP_MESSAGE.encode()) == GROUP_MESSAGE
    assert SenderKeyDistribution.decode(DISTRIBUTION.encode()) == DISTRIBUTION
    assert Sealed.from_wire(SEALED_WIRE).ciphertext == b"framed ciphertext"
    assert PrekeyBundle.from_wire(BUNDLE_WIRE).one_time_prekey_id == 2
    assert GroupContext.from_envelope(ENVELOPE, bytes(32)).parent_id == BOB_ID
    assert FileReference.decode(FILE_REFERENCE.encode()) == FILE_REFERENCE
    assert Commit.parse(COMMIT).signature_verifies()
    assert parse_link_code(LINK_CODE)[0] == DEVICE_ID
    assert decode_link_payload(LINK_PAYLOAD).master_private_key == MASTER.private_bytes()
    assert ListedDevice.from_api(LISTED_DEVICE).device_id == DEVICE_ID
    assert TrustStore.from_state(TRUST_STATE).pending(BOB_ID) == MASTER.public_key
    assert decrypt_state(KEYSTORE_BLOB, PASSPHRASE) == {"version": 3, "keys": {"a": [1, 2]}}
