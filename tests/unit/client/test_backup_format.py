"""The encrypted backup object (protocol/backup.py), its recovery key text (protocol/recovery_key.py)
and the document inside it (protocol/backup_contents.py): what opens, and everything that must not."""

from __future__ import annotations

import hashlib
import io
import json
import uuid

import pytest

from veil.client.protocol.backup import (
    HEADER_SIZE,
    BackupDecryptionError,
    BackupOwnerError,
    decrypt_backup,
    encrypt_backup,
)
from veil.client.protocol.backup_contents import (
    BackupContents,
    KeyLogSnapshot,
    MalformedBackupContentsError,
    history_key,
)
from veil.client.protocol.codec import b64encode
from veil.client.protocol.crockford import ALPHABET
from veil.client.protocol.identity import MasterKey
from veil.client.protocol.recovery_key import (
    RecoveryKeyTextError,
    format_recovery_key,
    new_recovery_key,
    parse_recovery_key,
)

ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())
CHUNK = 32
# Enough for several chunks, so that dropping or reordering whole chunks is covered too.
DOCUMENT = b'{"history": "Lunch on Thursday? Yes, 12:30 at the usual place."}' * 3


def seal(plaintext: bytes = DOCUMENT, *, key: bytes, user_id: str = ALICE) -> bytes:
    sink = io.BytesIO()
    result = encrypt_backup(io.BytesIO(plaintext), sink, key, user_id, chunk_size=CHUNK)
    assert result.size == len(sink.getvalue())
    return sink.getvalue()


def unseal(sealed: bytes, *, key: bytes, user_id: str = ALICE) -> bytes:
    sink = io.BytesIO()
    decrypt_backup(io.BytesIO(sealed), sink, key, user_id)
    return sink.getvalue()


# The object ------------------------------------------------------------------------------------


def test_round_trip_and_the_reported_digest() -> None:
    key = new_recovery_key()
    sink = io.BytesIO()
    result = encrypt_backup(io.BytesIO(DOCUMENT), sink, key, ALICE, chunk_size=CHUNK)
    assert result.sha256 == hashlib.sha256(sink.getvalue()).digest()
    assert unseal(sink.getvalue(), key=key) == DOCUMENT
    assert DOCUMENT[:20] not in sink.getvalue()


def test_each_backup_has_its_own_salt_so_reusing_a_recovery_key_never_reuses_a_key() -> None:
    key = new_recovery_key()
    first, second = seal(key=key), seal(key=key)
    assert first[:HEADER_SIZE] != second[:HEADER_SIZE]
    assert first[HEADER_SIZE + 10 :] != second[HEADER_SIZE + 10 :]


def test_a_wrong_recovery_key_is_refused() -> None:
    sealed = seal(key=new_recovery_key())
    with pytest.raises(BackupDecryptionError):
        unseal(sealed, key=new_recovery_key())


def test_every_flipped_byte_is_refused() -> None:
    key = new_recovery_key()
    sealed = seal(key=key)
    for position in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x01
        # A flip in the user id names another account; anywhere else the object does not open.
        with pytest.raises((BackupDecryptionError, BackupOwnerError)):
            unseal(bytes(damaged), key=key)


def test_every_truncation_and_an_appended_byte_are_refused() -> None:
    key = new_recovery_key()
    sealed = seal(key=key)
    for length in range(len(sealed)):
        with pytest.raises(BackupDecryptionError):
            unseal(sealed[:length], key=key)
    with pytest.raises(BackupDecryptionError):
        unseal(sealed + b"\x00", key=key)


def test_another_users_backup_is_refused_before_decryption() -> None:
    key = new_recovery_key()
    with pytest.raises(BackupOwnerError):
        unseal(seal(key=key, user_id=BOB), key=key, user_id=ALICE)


def test_a_server_that_rewrites_the_owner_in_the_header_breaks_the_object() -> None:
    """Bob's backup relabelled as Alice's (the header is in clear): the header is bound into every
    chunk, so it no longer opens, even with the right key."""
    key = new_recovery_key()
    sealed = bytearray(seal(key=key, user_id=BOB))
    sealed[6:22] = uuid.UUID(ALICE).bytes
    with pytest.raises(BackupDecryptionError):
        unseal(bytes(sealed), key=key, user_id=ALICE)


def test_something_else_than_a_backup_is_refused() -> None:
    with pytest.raises(BackupDecryptionError, match="not a Veil backup"):
        unseal(b"VEILF" + bytes(100), key=new_recovery_key())


# The recovery key's text -------------------------------------------------------------------------


def test_the_text_is_fourteen_groups_of_four_and_parses_back() -> None:
    key = new_recovery_key()
    text = format_recovery_key(key)
    groups = text.split("-")
    assert len(groups) == 14 and all(len(g) == 4 and set(g) <= set(ALPHABET) for g in groups)
    assert parse_recovery_key(text) == key


def test_parsing_forgives_case_spaces_dashes_and_look_alike_letters() -> None:
    key = new_recovery_key()
    text = format_recovery_key(key)
    assert parse_recovery_key(text.lower()) == key
    assert parse_recovery_key("  " + text.replace("-", " ") + "\n") == key
    assert parse_recovery_key(text.replace("-", "")) == key
    assert parse_recovery_key(text.replace("0", "o").replace("1", "l")) == key


def test_every_single_mistyped_character_is_caught_by_the_checksum() -> None:
    key = new_recovery_key()
    compact = format_recovery_key(key).replace("-", "")
    for position, original in enumerate(compact):
        for replacement in ALPHABET:
            if replacement == original:
                continue
            typo = compact[:position] + replacement + compact[position + 1 :]
            with pytest.raises(RecoveryKeyTextError):
                parse_recovery_key(typo)


def test_malformed_texts_say_what_is_wrong() -> None:
    text = format_recovery_key(new_recovery_key())
    with pytest.raises(RecoveryKeyTextError, match="56 letters and digits"):
        parse_recovery_key(text.rsplit("-", 1)[0])  # a group left out
    with pytest.raises(RecoveryKeyTextError, match="'U' does not occur"):
        parse_recovery_key("U" + text[1:])
    with pytest.raises(RecoveryKeyTextError, match="mistyped"):
        parse_recovery_key(text[:-2] + ("A" if text[-2] != "A" else "B") + text[-1])


# The document inside ---------------------------------------------------------------------------


def contents() -> BackupContents:
    conversation, device, message = (str(uuid.uuid4()) for _ in range(3))
    return BackupContents(
        user_id=ALICE,
        email="alice@example.org",
        created_at="2026-12-07T11:30:00+00:00",
        history={
            history_key(conversation, device, message): {
                "sender_id": BOB,
                "content_type": "text",
                "key_epoch": 0,
                "parent_id": None,
                "plaintext": b64encode("café at 12:30".encode()),
            }
        },
        master_key=MasterKey.generate(),
        verified_contacts={BOB: MasterKey.generate().public_key},
        key_log=KeyLogSnapshot(log_key=bytes(range(32)), head=None, versions={BOB: 3}),
        group_meta_keys={conversation: bytes(32)},
        address_book={"contacts": {"bob": BOB}, "groups": {}},
    )


def test_the_document_round_trips() -> None:
    original = contents()
    restored = BackupContents.decode(original.encode())
    assert restored.encode() == original.encode()
    assert restored.master_key is not None and original.master_key is not None
    assert restored.master_key.private_bytes() == original.master_key.private_bytes()


def _edited(change: dict[str, object]) -> bytes:
    document = json.loads(contents().encode())
    document.update(change)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "change",
    [
        {"format": "veil-backup/2"},
        {"unknown": 1},
        {"user_id": "not a uuid"},
        {"history": {"a/b/c": {}}},
        {
            "master_key": {
                "public_key": b64encode(MasterKey.generate().public_key),
                "private_key": b64encode(bytes(32)),
            }
        },
        {"verified_contacts": {BOB: b64encode(bytes(32))}},  # not a usable master key
        {"address_book": []},
    ],
    ids=["format", "member", "user", "history", "master-key-pair", "contact-key", "address-book"],
)
def test_a_malformed_document_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(MalformedBackupContentsError):
        BackupContents.decode(_edited(change))


def test_not_json_is_refused() -> None:
    with pytest.raises(MalformedBackupContentsError):
        BackupContents.decode(b"\xff not json")
