"""A group's `encrypted_meta` is ciphertext by contract: plaintext is refused as for messages
(ADR 0009). Before, `{type: group, encrypted_meta: base64("Family chat ...")}` was a 201 and the
server stored the group's name in the clear."""

from __future__ import annotations

import base64
import json
import os

import asyncpg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tests.conftest import ServerFactory
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register

PLAINTEXTS = [
    "Family chat: Mum, Dad, Ana and the twins",
    "Wochenendausflug in die Berge, Samstag 9 Uhr",
    "Семейный чат: мама, папа и дети",
    "周末爬山小组，星期六早上九点集合",
    json.dumps({"name": "Book club", "avatar": None}),
    "Book club",  # short: below what the content rule can judge, refused by its size
]


def _create(server: LiveServer, pair: dict[str, str], meta: bytes) -> tuple[int, dict[str, object]]:
    with server.client() as client:
        response = client.post(
            "/v1/conversations",
            json={"type": "group", "encrypted_meta": base64.b64encode(meta).decode()},
            headers=bearer(pair),
        )
    return response.status_code, response.json()


@pytest.fixture
def server(make_server: ServerFactory) -> LiveServer:
    # Dozens of groups in a few seconds: the group-creation limit is not what is tested here.
    return make_server(VEIL_RATE_LIMITS="off")


@pytest.fixture
def owner(server: LiveServer) -> dict[str, str]:
    with server.client() as client:
        pair: dict[str, str] = login(client, register(client))
    return pair


async def _groups(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM conversations WHERE type = 'group'")
        return count
    finally:
        await conn.close()


async def test_base64_of_plain_text_is_refused_and_nothing_is_stored(
    server: LiveServer, owner: dict[str, str], database_url: str
) -> None:
    for plaintext in PLAINTEXTS:
        status, problem = _create(server, owner, plaintext.encode())
        assert status == 422, (plaintext, problem)
        assert problem["errors"][0]["loc"][-1] == "encrypted_meta"  # type: ignore[index]
        assert plaintext not in json.dumps(problem, ensure_ascii=False)
    assert await _groups(database_url) == 0


async def test_real_aead_output_is_accepted_and_returned_unchanged(
    server: LiveServer, owner: dict[str, str], database_url: str
) -> None:
    name = json.dumps({"name": "Family chat: Mum, Dad, Ana and the twins", "avatar": None}).encode()
    metas = []
    for _ in range(20):
        nonce = os.urandom(12)
        metas.append(nonce + AESGCM(AESGCM.generate_key(bit_length=256)).encrypt(nonce, name, None))
        nonce = os.urandom(12)
        metas.append(nonce + ChaCha20Poly1305(ChaCha20Poly1305.generate_key()).encrypt(nonce, b"", None))
    for meta in metas:
        status, created = _create(server, owner, meta)
        assert status == 201, created
        assert base64.b64decode(str(created["encrypted_meta"])) == meta
    assert await _groups(database_url) == len(metas)
