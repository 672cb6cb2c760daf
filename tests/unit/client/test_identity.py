"""Master keys, device certificates, link codes and payloads, safety numbers (design14 §1, §3)."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from veil.client.protocol.errors import InvalidMasterKeyError, MalformedMessageError
from veil.client.protocol.identity import (
    LinkPayload,
    MasterKey,
    certificate_bytes,
    decode_link_payload,
    encode_link_payload,
    format_safety_number,
    is_acceptable_master_key,
    link_code,
    link_digest,
    link_digest_matches,
    link_proof,
    parse_link_code,
    parse_safety_number_qr,
    require_master_key,
    safety_number,
    safety_number_qr,
    verify_certificate,
)

P = 2**255 - 19
USER = "5b0c2a6e-0d3f-4c1e-9a57-2f6d1c8e4b10"
DEVICE = "a1f3e2d4-7b6c-4d5e-8f90-1a2b3c4d5e6f"


def _key() -> bytes:
    return os.urandom(32)


def _encoding(y: int, sign: int = 0) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


# --- certificates ---------------------------------------------------------------------------------


def test_certificate_signs_exactly_the_documented_bytes() -> None:
    master = MasterKey.generate()
    identity_key, signing_key = _key(), _key()
    documented = (
        b"veil/device-certificate/v1"
        + uuid.UUID(USER).bytes
        + uuid.UUID(DEVICE).bytes
        + identity_key
        + signing_key
    )
    assert len(documented) == 26 + 16 + 16 + 32 + 32
    assert certificate_bytes(USER, DEVICE, identity_key, signing_key) == documented
    signature = master.certify(USER, DEVICE, identity_key, signing_key)
    assert len(signature) == 64
    Ed25519PublicKey.from_public_bytes(master.public_key).verify(signature, documented)
    assert verify_certificate(master.public_key, USER, DEVICE, identity_key, signing_key, signature)


def test_ids_may_be_given_in_any_spelling_or_as_raw_bytes() -> None:
    keys = (_key(), _key())
    expected = certificate_bytes(USER, DEVICE, *keys)
    assert certificate_bytes(USER.upper(), uuid.UUID(DEVICE).bytes, *keys) == expected
    assert certificate_bytes(uuid.UUID(USER).bytes, DEVICE.replace("-", ""), *keys) == expected


@pytest.mark.parametrize(
    "change",
    ["master_key", "user_id", "device_id", "identity_key", "signing_key", "keys_swapped"],
)
def test_a_certificate_is_valid_for_its_own_user_device_and_keys_only(change: str) -> None:
    master = MasterKey.generate()
    identity_key, signing_key = _key(), _key()
    signature = master.certify(USER, DEVICE, identity_key, signing_key)
    claim: dict[str, Any] = {
        "master_key": master.public_key,
        "user_id": USER,
        "device_id": DEVICE,
        "identity_key": identity_key,
        "signing_key": signing_key,
    }
    if change == "master_key":
        claim["master_key"] = MasterKey.generate().public_key
    elif change == "keys_swapped":
        claim["identity_key"], claim["signing_key"] = signing_key, identity_key
    elif change in ("user_id", "device_id"):
        claim[change] = str(uuid.uuid4())
    else:
        claim[change] = _key()
    assert not verify_certificate(signature=signature, **claim)


@pytest.mark.parametrize("position", [0, 31, 32, 63])
def test_a_tampered_certificate_fails(position: int) -> None:
    master = MasterKey.generate()
    keys = (_key(), _key())
    signature = bytearray(master.certify(USER, DEVICE, *keys))
    signature[position] ^= 0x01
    assert not verify_certificate(master.public_key, USER, DEVICE, *keys, bytes(signature))


@pytest.mark.parametrize(
    "bad",
    [
        {"master_key": b"\x01" * 31},
        {"master_key": bytes(32)},  # small order
        {"master_key": "not bytes"},
        {"user_id": "not-a-uuid"},
        {"user_id": b"\x00" * 15},
        {"device_id": None},
        {"identity_key": b"\x00" * 33},
        {"signing_key": b""},
        {"signature": None},
        {"signature": b"\x00" * 63},
        {"signature": "a" * 64},
    ],
)
def test_verify_certificate_answers_false_and_never_raises_on_malformed_input(bad: dict[str, object]) -> None:
    master = MasterKey.generate()
    identity_key, signing_key = _key(), _key()
    args: dict[str, object] = {
        "master_key": master.public_key,
        "user_id": USER,
        "device_id": DEVICE,
        "identity_key": identity_key,
        "signing_key": signing_key,
        "signature": master.certify(USER, DEVICE, identity_key, signing_key),
    }
    assert verify_certificate(**args)  # type: ignore[arg-type]
    args.update(bad)
    assert verify_certificate(**args) is False  # type: ignore[arg-type]


# --- master keys ----------------------------------------------------------------------------------

# The y values of the 8 small-order points (libsodium's blocklist), and both signs of x for each.
ORDER_8_Y = int.from_bytes(
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
)
SMALL_ORDER_Y = [0, 1, P - 1, ORDER_8_Y, P - ORDER_8_Y]


@pytest.mark.parametrize("y", SMALL_ORDER_Y)
@pytest.mark.parametrize("sign", [0, 1])
def test_small_order_master_keys_are_refused(y: int, sign: int) -> None:
    key = _encoding(y, sign)
    assert not is_acceptable_master_key(key)
    with pytest.raises(InvalidMasterKeyError):
        require_master_key(key)


@pytest.mark.parametrize("y", [0, P - 1, ORDER_8_Y, P - ORDER_8_Y])
def test_the_refused_points_really_are_small_order(y: int) -> None:
    # Independent of the list's source: map to Curve25519 (u = (1 + y) / (1 - y)), where X25519
    # refuses a small-order peer key because the shared secret comes out all zero. (y = 1, the
    # identity, maps to the point at infinity and needs no check.)
    u = (1 + y) * pow(1 - y, P - 2, P) % P
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's message is not ours to pin
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(u.to_bytes(32, "little")))


@pytest.mark.parametrize("y", [P, P + 1, P + 2, 2**255 - 1])
def test_non_canonical_encodings_are_refused(y: int) -> None:
    assert not is_acceptable_master_key(_encoding(y))
    assert not is_acceptable_master_key(_encoding(y, 1))


def test_generated_master_keys_are_acceptable_and_wrong_sizes_are_not() -> None:
    for _ in range(20):
        assert is_acceptable_master_key(MasterKey.generate().public_key)
    key = MasterKey.generate().public_key
    assert not is_acceptable_master_key(key[:31])
    assert not is_acceptable_master_key(key + b"\x00")


def test_master_key_state_round_trips_and_is_strict() -> None:
    master = MasterKey.generate()
    restored = MasterKey.from_state(master.to_state())
    assert restored.public_key == master.public_key
    signature = restored.certify(USER, DEVICE, b"\x01" * 32, b"\x02" * 32)
    assert verify_certificate(master.public_key, USER, DEVICE, b"\x01" * 32, b"\x02" * 32, signature)
    with pytest.raises(ValueError, match="exactly one member"):
        MasterKey.from_state({**master.to_state(), "extra": 1})
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey.from_state({"private_key": "AAAA"})


# --- link codes -----------------------------------------------------------------------------------


SECRET = bytes(range(10, 20))


def test_link_code_round_trips_and_reads_in_groups_of_four() -> None:
    identity_key, signing_key = _key(), _key()
    code = link_code(DEVICE, identity_key, signing_key, secret=SECRET)
    assert code.startswith("VL1-")
    groups = code.removeprefix("VL1-").split("-")
    assert [len(group) for group in groups] == [4] * 14 + [2]  # 36 bytes = 58 symbols
    assert set("".join(groups)) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    device_id, digest, secret = parse_link_code(code)
    assert device_id == DEVICE and secret == SECRET
    assert digest == hashlib.sha256(b"veil/link-code/v1" + identity_key + signing_key).digest()[:10]
    assert digest == link_digest(identity_key, signing_key)
    assert link_digest_matches(digest, identity_key, signing_key)


def test_link_code_parsing_forgives_case_spacing_and_crockford_look_alikes() -> None:
    # Ids and keys chosen so that the code is full of zeros and ones.
    device = "00000000-0000-4000-8000-000000000001"
    keys = (b"\x00" * 32, b"\x00" * 32)
    code = link_code(device, *keys, secret=bytes(10))
    assert "0" in code.removeprefix("VL1-")
    assert "1" in code.removeprefix("VL1-")
    expected = parse_link_code(code)
    body = code.removeprefix("VL1-")
    variants = [
        code.lower(),
        "  " + code.replace("-", " ") + "\n",
        "vl1" + body.replace("-", ""),
        "VL1-" + body.replace("0", "O").replace("1", "l"),
        "VL1-" + body.replace("0", "o").replace("1", "I"),
        "VL1 - " + body.replace("-", "--"),
    ]
    for variant in variants:
        assert parse_link_code(variant) == expected, variant


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "starts with VL1-"),
        ("VL2-0000", "starts with VL1-"),
        ("0000-0000-0000", "starts with VL1-"),
        ("VL1-0000", "58 letters and digits"),
        ("VL1-" + "0" * 59, "58 letters and digits"),
        ("VL1-" + "0" * 57 + "U", "does not occur"),
        ("VL1-" + "0" * 57 + "*", "does not occur"),
        ("VL1-" + "0" * 57 + "1", "last character"),  # sets one of the two padding bits
    ],
)
def test_malformed_link_codes_are_refused_with_a_readable_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_link_code(text)


def test_a_typo_in_a_link_code_names_another_device_or_other_keys() -> None:
    identity_key, signing_key = _key(), _key()
    code = link_code(DEVICE, identity_key, signing_key, secret=SECRET)
    symbols = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    for position in range(4, len(code) - 1):  # the last symbol carries padding bits: checked above
        if code[position] == "-":
            continue
        replacement = symbols[(symbols.index(code[position]) + 1) % 32]
        typo = code[:position] + replacement + code[position + 1 :]
        device_id, digest, secret = parse_link_code(typo)
        assert (
            device_id != DEVICE
            or not link_digest_matches(digest, identity_key, signing_key)
            or secret != SECRET
        )


def test_a_link_digest_does_not_match_other_keys() -> None:
    identity_key, signing_key = _key(), _key()
    digest = link_digest(identity_key, signing_key)
    assert not link_digest_matches(digest, _key(), signing_key)
    assert not link_digest_matches(digest, identity_key, _key())
    assert not link_digest_matches(digest, signing_key, identity_key)
    assert not link_digest_matches(digest, b"short", signing_key)


# --- link payloads --------------------------------------------------------------------------------


def _prefixed(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(field)) + field for field in fields)


def test_link_payload_encoding_is_the_documented_length_prefixed_list() -> None:
    master = MasterKey.generate()
    proof = link_proof(SECRET, DEVICE, master.public_key)
    public_only = encode_link_payload(LinkPayload(master.public_key, None, proof))
    assert public_only == _prefixed(b"veil/link/v1", master.public_key, b"", proof)
    assert decode_link_payload(public_only) == LinkPayload(master.public_key, None, proof)
    primary = LinkPayload(master.public_key, master.private_bytes(), proof)
    encoded = encode_link_payload(primary)
    assert encoded == _prefixed(b"veil/link/v1", master.public_key, master.private_bytes(), proof)
    assert decode_link_payload(encoded) == primary


def test_a_link_proof_answers_one_code_for_one_master_key() -> None:
    """Only a device that read the code (its secret) can make the proof the new device checks."""
    master, other = MasterKey.generate(), MasterKey.generate()
    proof = link_proof(SECRET, DEVICE, master.public_key)
    mac = hmac.new(SECRET, b"veil/link-proof/v1" + uuid.UUID(DEVICE).bytes + master.public_key, "sha256")
    assert proof == mac.digest() and len(proof) == 32
    assert proof != link_proof(bytes(10), DEVICE, master.public_key)
    assert proof != link_proof(SECRET, str(uuid.uuid4()), master.public_key)
    assert proof != link_proof(SECRET, DEVICE, other.public_key)


def test_a_link_payload_cannot_pair_a_master_key_with_another_private_key() -> None:
    master, other = MasterKey.generate(), MasterKey.generate()
    with pytest.raises(ValueError, match="not the master key's"):
        LinkPayload(master.public_key, other.private_bytes())
    with pytest.raises(MalformedMessageError, match="not the master key's"):
        decode_link_payload(_prefixed(b"veil/link/v1", master.public_key, other.private_bytes(), bytes(32)))


MASTER = MasterKey.from_private_bytes(bytes(range(32)))  # fixed: test ids must not vary between runs


@pytest.mark.parametrize(
    "data",
    [
        b"",
        _prefixed(b"veil/link/v1", MASTER.public_key),
        _prefixed(b"veil/link/v2", MASTER.public_key, b""),
        _prefixed(b"VEIL/LINK/V1", MASTER.public_key, b""),
        _prefixed(b"veil/link/v1", MASTER.public_key, b"", b""),
        _prefixed(b"veil/link/v1", MASTER.public_key, b"") + b"\x00",
        _prefixed(b"veil/link/v1", MASTER.public_key, b"")[:-1],
        _prefixed(b"veil/link/v1", MASTER.public_key[:31], b""),
        _prefixed(b"veil/link/v1", MASTER.public_key + b"\x00", b""),
        _prefixed(b"veil/link/v1", bytes(32), b""),  # a small-order master key
        _prefixed(b"veil/link/v1", _encoding(P + 1), b""),  # non-canonical
        _prefixed(b"veil/link/v1", MASTER.public_key, MASTER.private_bytes()[:31]),
        _prefixed(b"veil/link/v1", MASTER.public_key, MASTER.private_bytes() + b"\x00"),
        struct.pack(">I", 2**32 - 1) + b"veil/link/v1",
    ],
)
def test_anything_but_a_well_formed_link_payload_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        decode_link_payload(data)


# --- safety numbers -------------------------------------------------------------------------------

# Known answer, made once with this implementation (design14 §2) and re-derived by
# `_reference_half` below, a second spelling of the design's words. The master keys are the Ed25519
# public keys of the seeds 0x01 * 32 and 0x02 * 32, the user ids the UUIDs below.
KAT_USER_A = "00000000-0000-4000-8000-00000000000a"
KAT_USER_B = "00000000-0000-4000-8000-00000000000b"
KAT_KEY_A = bytes.fromhex("8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c")
KAT_KEY_B = bytes.fromhex("8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394")
KAT_NUMBER = "027608718338160637292907270966721204975790905162088348938661"


def _reference_half(user_id: str, master_key: bytes) -> str:
    """The design's words, spelt out once more: SHA-512(0x0000 || key || id), 5,199 more rounds of
    SHA-512(h || key), the first 30 bytes as six 5-byte big-endian numbers mod 100000."""
    h = hashlib.sha512(b"\x00\x00" + master_key + uuid.UUID(user_id).bytes).digest()
    for _ in range(5199):
        h = hashlib.sha512(h + master_key).digest()
    return "".join(str(int.from_bytes(h[i : i + 5], "big") % 100000).zfill(5) for i in range(0, 30, 5))


def test_safety_number_known_answer() -> None:
    assert Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key().public_bytes_raw() == KAT_KEY_A
    assert Ed25519PrivateKey.from_private_bytes(b"\x02" * 32).public_key().public_bytes_raw() == KAT_KEY_B
    assert safety_number(KAT_USER_A, KAT_KEY_A, KAT_USER_B, KAT_KEY_B) == KAT_NUMBER
    # User a's id is the lower one, so a's half comes first.
    halves = _reference_half(KAT_USER_A, KAT_KEY_A) + _reference_half(KAT_USER_B, KAT_KEY_B)
    assert halves == KAT_NUMBER


def test_safety_number_is_the_same_on_both_sides_and_60_digits() -> None:
    user_a, user_b = str(uuid.uuid4()), str(uuid.uuid4())
    key_a, key_b = MasterKey.generate().public_key, MasterKey.generate().public_key
    number = safety_number(user_a, key_a, user_b, key_b)
    assert number == safety_number(user_b, key_b, user_a, key_a)
    assert len(number) == 60
    assert number.isdigit()


def test_safety_number_changes_when_either_master_key_or_user_changes() -> None:
    user_a, user_b = str(uuid.uuid4()), str(uuid.uuid4())
    key_a, key_b = MasterKey.generate().public_key, MasterKey.generate().public_key
    number = safety_number(user_a, key_a, user_b, key_b)
    reset_a = safety_number(user_a, MasterKey.generate().public_key, user_b, key_b)
    reset_b = safety_number(user_a, key_a, user_b, MasterKey.generate().public_key)
    other_user = safety_number(str(uuid.uuid4()), key_a, user_b, key_b)
    assert len({number, reset_a, reset_b, other_user}) == 4
    # A key change alters only the half of the user whose key changed.
    halves = {number[:30], number[30:]}
    assert len(halves & {reset_a[:30], reset_a[30:]}) == 1
    assert len(halves & {reset_b[:30], reset_b[30:]}) == 1


def test_safety_number_display_and_qr_round_trip() -> None:
    assert format_safety_number(KAT_NUMBER) == (
        "02760 87183 38160 63729 29072 70966 72120 49757 90905 16208 83489 38661"
    )
    qr = safety_number_qr(KAT_NUMBER)
    assert qr == "VEIL-SN1:" + KAT_NUMBER
    assert parse_safety_number_qr(qr) == KAT_NUMBER
    assert safety_number_qr(format_safety_number(KAT_NUMBER)) == qr


@pytest.mark.parametrize(
    "text",
    [
        KAT_NUMBER,
        "VEIL-SN2:" + KAT_NUMBER,
        "veil-sn1:" + KAT_NUMBER,
        "VEIL-SN1:" + KAT_NUMBER[:-1],
        "VEIL-SN1:" + KAT_NUMBER + "0",
        "VEIL-SN1:" + KAT_NUMBER[:-1] + "x",
        "VEIL-SN1:" + KAT_NUMBER[:-1] + "\u0663",  # an Arabic-Indic digit: isdigit() but not ASCII
        "VEIL-SN1: " + KAT_NUMBER,
    ],
)
def test_a_scanned_code_that_is_not_a_safety_number_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="safety number"):
        parse_safety_number_qr(text)


def test_safety_number_refuses_malformed_keys_and_ids() -> None:
    key = MasterKey.generate().public_key
    with pytest.raises(ValueError, match="32 bytes"):
        safety_number(USER, key[:31], DEVICE, key)
    with pytest.raises(ValueError, match="UUID"):
        safety_number("alice", key, DEVICE, key)
