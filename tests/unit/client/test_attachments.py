"""Chunked file encryption for attachments, and the file reference inside a `file` message."""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.client.protocol.attachments import EncryptedFile, FileReference, decrypt_file, encrypt_file
from veil.client.protocol.errors import DecryptionError, MalformedMessageError

CHUNK = 16
HEADER = 10
TAG = 16


def encrypt(data: bytes, chunk_size: int = CHUNK) -> tuple[bytes, EncryptedFile]:
    sink = io.BytesIO()
    result = encrypt_file(io.BytesIO(data), sink, chunk_size=chunk_size)
    return sink.getvalue(), result


def decrypt(ciphertext: bytes, key: bytes) -> bytes:
    sink = io.BytesIO()
    written = decrypt_file(io.BytesIO(ciphertext), sink, key)
    assert written == len(sink.getvalue())
    return sink.getvalue()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5 * CHUNK + 3))
def test_round_trip_and_reported_size_and_digest(data: bytes) -> None:
    ciphertext, result = encrypt(data)
    chunks = max(1, -(-len(data) // CHUNK))
    assert result.size == len(ciphertext) == HEADER + len(data) + chunks * TAG
    assert result.sha256 == hashlib.sha256(ciphertext).digest()
    assert result.plaintext_size == len(data)
    assert decrypt(ciphertext, result.key) == data


def test_every_file_gets_a_fresh_key() -> None:
    first, a = encrypt(b"same bytes")
    second, b = encrypt(b"same bytes")
    assert a.key != b.key
    assert first != second


@pytest.mark.parametrize("size", [0, CHUNK - 1, CHUNK, 3 * CHUNK])
def test_truncation_at_a_chunk_boundary_is_detected(size: int) -> None:
    ciphertext, result = encrypt(os.urandom(size) if size else b"")
    for cut in range(HEADER, len(ciphertext), CHUNK + TAG):
        with pytest.raises(DecryptionError):
            decrypt(ciphertext[:cut], result.key)
    with pytest.raises(DecryptionError):
        decrypt(ciphertext[:-1], result.key)


def test_altered_reordered_appended_or_wrong_key_is_refused() -> None:
    ciphertext, result = encrypt(os.urandom(3 * CHUNK))
    block = CHUNK + TAG
    altered = bytearray(ciphertext)
    altered[HEADER + 5] ^= 1
    first, second = ciphertext[HEADER : HEADER + block], ciphertext[HEADER + block : HEADER + 2 * block]
    swapped = ciphertext[:HEADER] + second + first + ciphertext[HEADER + 2 * block :]
    repeated = ciphertext + ciphertext[HEADER : HEADER + block]
    for bad in (bytes(altered), swapped, repeated, ciphertext + b"\0"):
        with pytest.raises(DecryptionError):
            decrypt(bad, result.key)
    with pytest.raises(DecryptionError):
        decrypt(ciphertext, os.urandom(32))
    # The header is authenticated too: another chunk size does not decrypt.
    other_size = ciphertext[:6] + (CHUNK + 1).to_bytes(4, "big") + ciphertext[HEADER:]
    with pytest.raises(DecryptionError):
        decrypt(other_size, result.key)
    with pytest.raises(MalformedMessageError):
        decrypt(b"NOTVEIL" + ciphertext[7:], result.key)


class CountingReader(io.BytesIO):
    largest_read = 0

    def read(self, size: int | None = -1) -> bytes:
        assert size is not None and size > 0, "the whole stream was requested at once"
        self.largest_read = max(self.largest_read, size)
        return super().read(size)


def test_files_are_processed_one_chunk_at_a_time() -> None:
    data = os.urandom(10 * 1024 * 1024)
    reader = CountingReader(data)
    sink = io.BytesIO()
    result = encrypt_file(reader, sink)
    assert reader.largest_read == 64 * 1024
    ciphertext = CountingReader(sink.getvalue())
    assert decrypt_file(ciphertext, io.BytesIO(), result.key) == len(data)
    assert ciphertext.largest_read == 64 * 1024 + TAG


def test_file_reference_round_trip_and_refusals() -> None:
    reference = FileReference(
        attachment_id=str(uuid.uuid4()),
        key=os.urandom(32),
        sha256=os.urandom(32),
        size=1234,
        name="holiday.jpg",
        plaintext_size=1200,
    )
    assert FileReference.decode(reference.encode()) == reference
    for bad in (
        b"not json",
        b"[]",
        reference.encode().replace(b'"holiday.jpg"', b'"../../etc/passwd"'),
        reference.encode().replace(b'"size":1234', b'"size":-1'),
        reference.encode().replace(b'"size":1234', b'"size":true'),
    ):
        with pytest.raises(MalformedMessageError):
            FileReference.decode(bad)
