"""Known-answer vectors for PQXDH (tests/vectors/pqxdh.json): the production code must reproduce every
recorded value and decapsulate every recorded ciphertext to its recorded secret, and the layouts the
file's descriptions state must give the same bytes, so another client can implement from the file."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.vectors import make_pqxdh
from veil.client.protocol import pqxdh, x3dh
from veil.client.protocol.framing import PQEncapsulation, SessionInitHeader
from veil.client.protocol.keys import DeviceKeys, PQPrekey, SignedPrekey
from veil.client.protocol.pairwise import session_id_for

VECTORS = Path(__file__).parents[2] / "vectors" / "pqxdh.json"
FILE = json.loads(VECTORS.read_text(encoding="utf-8"))
KINDS = ("pq_prekey", "ml_kem_768", "pqxdh", "session_init_pq")


def cases(kind: str) -> list[Any]:
    """The cases of one kind, each as a pytest param named after the case."""
    return [pytest.param(case, id=case["name"]) for case in FILE["cases"] if case["kind"] == kind]


def _hex(case: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(case[key])


def _mlkem(case: dict[str, Any]) -> MLKEM768PrivateKey:
    return MLKEM768PrivateKey.from_seed_bytes(_hex(case, "pq_seed"))


def test_the_file_states_its_origin_and_covers_every_kind() -> None:
    assert FILE["generated_by"].startswith("python -m tests.vectors.make_pqxdh")
    assert FILE["description"]
    names = [case["name"] for case in FILE["cases"]]
    assert len(names) == len(set(names))
    assert {case["kind"] for case in FILE["cases"]} == set(KINDS)
    assert all(case["description"] for case in FILE["cases"])


def test_the_generator_reproduces_the_file_from_its_recorded_ciphertext() -> None:
    assert make_pqxdh.build() == FILE


def test_the_ml_kem_seeds_are_the_stated_hashes() -> None:
    seeds = {case["pq_seed"] for case in FILE["cases"] if "pq_seed" in case}
    assert seeds == {hashlib.sha512(b"veil/vectors/pqxdh/responder-pq-prekey").hexdigest()}


# --- PQ prekey signature --------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("pq_prekey"))
def test_pq_prekey_signed_bytes_follow_the_description(case: dict[str, Any]) -> None:
    public_key = _hex(case, "public_key")
    assert len(public_key) == 1184
    assert _mlkem(case).public_key().public_bytes_raw() == public_key
    written_out = b"veil/pq-prekey/v1" + struct.pack(">I", case["key_id"]) + public_key
    assert _hex(case, "signed_bytes") == written_out
    assert pqxdh.pq_prekey_signed_bytes(case["key_id"], public_key) == written_out


@pytest.mark.parametrize("case", cases("pq_prekey"))
def test_pq_prekey_signature_is_reproduced_and_verifies(case: dict[str, Any]) -> None:
    signing = Ed25519PrivateKey.from_private_bytes(_hex(case, "signing_private"))
    assert signing.public_key().public_bytes_raw() == _hex(case, "signing_key")
    Ed25519PublicKey.from_public_bytes(_hex(case, "signing_key")).verify(
        _hex(case, "signature"), _hex(case, "signed_bytes")
    )
    # Ed25519 is deterministic: the production signer gives the recorded bytes.
    assert pqxdh.sign_pq_prekey(signing, case["key_id"], _hex(case, "public_key")) == _hex(case, "signature")
    pqxdh.verify_pq_prekey(
        _hex(case, "signing_key"), case["key_id"], _hex(case, "public_key"), _hex(case, "signature")
    )


@pytest.mark.parametrize("case", cases("pq_prekey"))
def test_a_device_publishes_the_recorded_pq_prekey(case: dict[str, Any]) -> None:
    prekey = PQPrekey(
        case["key_id"], pqxdh.private_key_from_seed(_hex(case, "pq_seed")), _hex(case, "signature")
    )
    public = prekey.public_dict()
    assert public["key_id"] == case["key_id"]
    assert bytes.fromhex(case["public_key"]) == prekey.public_key
    assert PQPrekey.from_state(prekey.to_state()).public_dict() == public


# --- ML-KEM-768 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("ml_kem_768"))
def test_ml_kem_public_key_of_the_seed(case: dict[str, Any]) -> None:
    private_key = pqxdh.private_key_from_seed(_hex(case, "pq_seed"))
    assert pqxdh.public_key_bytes(private_key) == _hex(case, "public_key")
    assert private_key.private_bytes_raw() == _hex(case, "pq_seed")


@pytest.mark.parametrize("case", cases("ml_kem_768"))
def test_ml_kem_decapsulation_gives_the_recorded_secret(case: dict[str, Any]) -> None:
    assert len(_hex(case, "ciphertext")) == 1088
    assert pqxdh.decapsulate(_mlkem(case), _hex(case, "ciphertext")) == _hex(case, "shared_secret")


@pytest.mark.parametrize("case", cases("ml_kem_768"))
def test_ml_kem_implicit_rejection_gives_the_recorded_secret(case: dict[str, Any]) -> None:
    ciphertext = _hex(case, "ciphertext")
    assert _hex(case, "rejected_ciphertext") == ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x01])
    rejected = pqxdh.decapsulate(_mlkem(case), _hex(case, "rejected_ciphertext"))
    assert rejected == _hex(case, "rejected_shared_secret")
    assert rejected != _hex(case, "shared_secret")


# --- PQXDH secret --------------------------------------------------------------------------------


def _public(case: dict[str, Any], private: str) -> bytes:
    return X25519PrivateKey.from_private_bytes(_hex(case, private)).public_key().public_bytes_raw()


def _initiator_dh_outputs(case: dict[str, Any]) -> list[bytes]:
    def dh(private: str, public: str) -> bytes:
        return X25519PrivateKey.from_private_bytes(_hex(case, private)).exchange(
            X25519PublicKey.from_public_bytes(_hex(case, public))
        )

    outputs = [
        dh("initiator_identity_private", "signed_prekey_public"),
        dh("initiator_ephemeral_private", "responder_identity_key"),
        dh("initiator_ephemeral_private", "signed_prekey_public"),
    ]
    if case["one_time_prekey_id"] is not None:
        outputs.append(dh("initiator_ephemeral_private", "one_time_prekey_public"))
    return outputs


@pytest.mark.parametrize("case", cases("pqxdh"))
def test_pqxdh_public_keys_of_the_recorded_private_keys(case: dict[str, Any]) -> None:
    assert _public(case, "responder_identity_private") == _hex(case, "responder_identity_key")
    assert _public(case, "signed_prekey_private") == _hex(case, "signed_prekey_public")
    assert _public(case, "initiator_identity_private") == _hex(case, "initiator_identity_key")
    assert _public(case, "initiator_ephemeral_private") == _hex(case, "initiator_ephemeral_key")
    if case["one_time_prekey_id"] is not None:
        assert _public(case, "one_time_prekey_private") == _hex(case, "one_time_prekey_public")


@pytest.mark.parametrize("case", cases("pqxdh"))
def test_pqxdh_kdf_input_follows_the_description(case: dict[str, Any]) -> None:
    outputs = _initiator_dh_outputs(case)
    assert [bytes.fromhex(value) for value in case["dh"]] == outputs
    assert pqxdh.decapsulate(_mlkem(case), _hex(case, "ciphertext")) == _hex(case, "pq_shared_secret")
    assert _hex(case, "ikm") == b"\xff" * 32 + b"".join(outputs) + _hex(case, "pq_shared_secret")
    assert _hex(case, "salt") == bytes(32)
    assert _hex(case, "info") == b"Veil PQXDH v2"
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_hex(case, "salt"), info=_hex(case, "info"))
    assert hkdf.derive(_hex(case, "ikm")) == _hex(case, "shared_secret")


@pytest.mark.parametrize("case", cases("pqxdh"))
def test_pqxdh_secret_is_reproduced_by_the_production_kdf(case: dict[str, Any]) -> None:
    outputs = [bytes.fromhex(value) for value in case["dh"]]
    assert pqxdh.pqxdh_secret(outputs, _hex(case, "pq_shared_secret")) == _hex(case, "shared_secret")


def _responder_keys(case: dict[str, Any]) -> DeviceKeys:
    """Bob's device with the case's X25519 keys and its PQ prekey as the last-resort one."""
    one_time = {}
    if case["one_time_prekey_id"] is not None:
        one_time[case["one_time_prekey_id"]] = X25519PrivateKey.from_private_bytes(
            _hex(case, "one_time_prekey_private")
        )
    return DeviceKeys(
        identity=X25519PrivateKey.from_private_bytes(_hex(case, "responder_identity_private")),
        signing=Ed25519PrivateKey.generate(),  # the responder never checks its own signatures
        signed_prekey=SignedPrekey(
            case["signed_prekey_id"],
            X25519PrivateKey.from_private_bytes(_hex(case, "signed_prekey_private")),
            bytes(64),
        ),
        one_time_prekeys=one_time,
        next_key_id=case["pq_prekey_id"] + 1,
        pq_last_resort_prekey=PQPrekey(case["pq_prekey_id"], _mlkem(case), bytes(64)),
    )


@pytest.mark.parametrize("case", cases("pqxdh"))
def test_pqxdh_responder_derives_the_recorded_secret(case: dict[str, Any]) -> None:
    header = SessionInitHeader(
        identity_key=_hex(case, "initiator_identity_key"),
        ephemeral_key=_hex(case, "initiator_ephemeral_key"),
        signed_prekey_id=case["signed_prekey_id"],
        one_time_prekey_id=case["one_time_prekey_id"],
        pq=PQEncapsulation(case["pq_prekey_id"], _hex(case, "ciphertext")),
    )
    assert x3dh.respond(_responder_keys(case), header) == _hex(case, "shared_secret")


# --- session_init_pq frame ----------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("session_init_pq"))
def test_session_init_pq_prefix_follows_the_description(case: dict[str, Any]) -> None:
    written_out = struct.pack(
        ">BB32s32sIBII",
        2,
        4,
        _hex(case, "identity_key"),
        _hex(case, "ephemeral_key"),
        case["signed_prekey_id"],
        1,
        case["one_time_prekey_id"],
        case["pq_prekey_id"],
    ) + _hex(case, "ciphertext")
    assert len(written_out) == 1167
    assert _hex(case, "prefix") == written_out
    digest = hashlib.sha256(
        b"veil/session-id/v2\x00" + _hex(case, "identity_key") + _hex(case, "ephemeral_key")
    ).digest()
    assert _hex(case, "session_id") == digest[:16]


@pytest.mark.parametrize("case", cases("session_init_pq"))
def test_session_init_pq_prefix_round_trips_through_the_production_parser(case: dict[str, Any]) -> None:
    header = SessionInitHeader.decode(_hex(case, "prefix"))
    assert header == SessionInitHeader(
        identity_key=_hex(case, "identity_key"),
        ephemeral_key=_hex(case, "ephemeral_key"),
        signed_prekey_id=case["signed_prekey_id"],
        one_time_prekey_id=case["one_time_prekey_id"],
        pq=PQEncapsulation(case["pq_prekey_id"], _hex(case, "ciphertext")),
    )
    assert header.encode() == _hex(case, "prefix")
    assert header.size == 1167
    assert session_id_for(header) == _hex(case, "session_id")


def test_the_frame_case_uses_the_pqxdh_case_inputs() -> None:
    (frame,) = [case for case in FILE["cases"] if case["kind"] == "session_init_pq"]
    (secret,) = [case for case in FILE["cases"] if case["name"] == "pqxdh_with_one_time_prekey"]
    for key in ("signed_prekey_id", "one_time_prekey_id", "pq_prekey_id", "ciphertext"):
        assert frame[key] == secret[key]
    assert frame["identity_key"] == secret["initiator_identity_key"]
    assert frame["ephemeral_key"] == secret["initiator_ephemeral_key"]
