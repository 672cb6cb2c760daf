"""Encrypted files between reference clients: what the store and the database hold is ciphertext
and metadata only, and the recipient gets the sender's bytes exactly or an error."""

from __future__ import annotations

import asyncio
import io
import os

import asyncpg
import pytest

from tests.support.clients import Clients
from tests.support.files import s3_client
from tests.support.pgdump import dump
from veil.client.protocol.errors import DecryptionError
from veil.client.sdk.models import GroupMessage, VeilError
from veil.core.config import Settings

MiB = 1024 * 1024
CANARY = b"canary-f1 the quarterly numbers are fake 6d2e"
FILE_NAME = "canary-f2 resignation letter draft.pdf"


def planted(size: int) -> bytes:
    """Random bytes with the canary every MiB, so any plaintext leak shows it."""
    data = bytearray(os.urandom(size))
    for offset in range(0, size - len(CANARY), MiB):
        data[offset : offset + len(CANARY)] = CANARY
    return bytes(data)


def file_messages(messages: list[GroupMessage]) -> list[GroupMessage]:
    return [m for m in messages if m.content_type == "file"]


def attachment_row(database_url: str, attachment_id: str) -> asyncpg.Record:
    async def fetch() -> asyncpg.Record:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow("SELECT * FROM attachments WHERE id = $1::uuid", attachment_id)
            assert row is not None
            return row
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_a_20_mib_file_arrives_byte_exact_and_the_server_holds_only_ciphertext(
    clients: Clients, database_url: str, settings: Settings
) -> None:
    alice, bob = clients.new("alice"), clients.new("bob")
    conversation = alice.create_direct(bob.user_id)
    plaintext = planted(20 * MiB)

    sent = alice.send_file(conversation.conversation_id, io.BytesIO(plaintext), name=FILE_NAME)
    assert sent.reference.plaintext_size == len(plaintext)

    [message] = file_messages(bob.history(conversation.conversation_id))
    assert message.error is None
    received = io.BytesIO()
    reference = bob.download_file(message, received)
    assert received.getvalue() == plaintext
    assert reference.name == FILE_NAME

    row = attachment_row(database_url, reference.attachment_id)
    assert row["size"] == reference.size
    assert bytes(row["sha256"]) == reference.sha256
    stored = s3_client(settings).get_object(Bucket=settings.s3_bucket, Key=row["object_key"])["Body"].read()
    assert len(stored) == reference.size
    assert CANARY not in stored
    assert FILE_NAME.encode() not in stored
    assert reference.key not in stored
    database = dump(database_url)
    for secret in (CANARY.decode(), FILE_NAME, reference.key.hex()):
        assert secret not in database
    assert reference.key.hex() not in str(dict(row))


def test_a_swapped_object_is_refused_by_the_recipient(
    clients: Clients, database_url: str, settings: Settings
) -> None:
    """Whoever controls the store cannot substitute a file: the digest travels end-to-end encrypted."""
    alice, bob = clients.new("alice"), clients.new("bob")
    conversation = alice.create_direct(bob.user_id)
    sent = alice.send_file(conversation.conversation_id, io.BytesIO(planted(MiB)), name="a.bin")
    row = attachment_row(database_url, sent.reference.attachment_id)
    s3_client(settings).put_object(
        Bucket=settings.s3_bucket, Key=row["object_key"], Body=os.urandom(row["size"])
    )

    [message] = file_messages(bob.history(conversation.conversation_id))
    sink = io.BytesIO()
    with pytest.raises(DecryptionError, match="not the one the sender attached"):
        bob.download_file(message, sink)
    assert sink.getvalue() == b""


def test_files_in_a_group_and_deletion(clients: Clients) -> None:
    alice, bob, carol = clients.new("alice"), clients.new("bob"), clients.new("carol")
    group = alice.create_group()
    for member in (bob, carol):
        alice.invite(group.conversation_id, member.user_id)
        member.accept(group.conversation_id)
    content = planted(3 * MiB + 5)
    sent = carol.send_file(group.conversation_id, io.BytesIO(content), name="plan.txt")
    for reader in (alice, bob):
        [message] = file_messages(reader.history(group.conversation_id))
        sink = io.BytesIO()
        reader.download_file(message, sink)
        assert sink.getvalue() == content

    carol.delete_attachment(sent.reference.attachment_id)
    [message] = file_messages(bob.history(group.conversation_id))
    with pytest.raises(VeilError) as gone:
        bob.download_file(message, io.BytesIO())
    assert gone.value.status == 404
