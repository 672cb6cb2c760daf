"""The privacy proof: a full journey with planted canaries, then everything the server side holds
is searched for them and for every private and content key the clients ever had.

Searched: a plain-SQL dump of the whole database, every object in the bucket, every log line of the
Veil process and of PostgreSQL and S3, every mail the server sent, and every response an operator
can get. The journey covers registration and keys, a 1:1 chat with receipts, a group with
invitations, a removal and key rotation, an encrypted file with a secret name, an encrypted backup, an
export and an erasure with its purge.
"""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.clients import Clients
from tests.support.files import s3_client
from tests.support.mail import latest_code, mail_dir
from tests.support.pgdump import dump
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, register
from veil.client.protocol.recovery_key import parse_recovery_key
from veil.client.sdk.http import VeilClient
from veil.core.blobstore import BlobStore
from veil.core.clock import FakeClock
from veil.core.config import Settings
from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.maintenance import Maintenance
from veil.retention import RetentionPolicy

CANARIES = {
    "dm1": "canary-p01 alice to bob: meet at the old mill 4f1a",
    "dm2": "canary-p02 bob to alice: bring the ledger c39e",
    "group1": "canary-p03 alice to the group: budget is 9.3M 77b0",
    "group2": "canary-p04 after carol left: she must not see this 0d5c",
    "group3": "canary-p05 dave joins and says hello e812",
    "file": "canary-p06 file body: patient record 2231 9ab7",
    "file_name": "canary-p07 diagnosis-2231.pdf",
}

# Where a client's state keeps secrets: long-term private keys, chain keys, skipped message keys.
SECRET_FIELDS = {"identity", "signing", "private_key", "chain_key", "key"}

# What the server stores for a message: the envelope of the spec plus documented metadata
# (docs/e2ee.md "What the server sees"): conversation, sender, device, order, time, and the
# digest that tells a retried send from a conflicting one.
MESSAGE_COLUMNS = {
    "message_id",
    "ciphertext",
    "nonce",
    "auth_tag",
    "content_type",
    "parent_id",
    "key_epoch",
    "conversation_id",
    "sender_id",
    "sender_device_id",
    "seq",
    "created_at",
    "envelope_digest",
}
ENVELOPE_FIELDS = MESSAGE_COLUMNS - {"envelope_digest"}


# The purge runs 30 days on; retention longer than that keeps the rest of the journey to search.
KEEP_MESSAGES = RetentionPolicy(timedelta(days=90), timedelta(days=90), timedelta(days=90))


def secrets_in(state: Any, field: str | None = None) -> Iterator[bytes]:
    if isinstance(state, dict):
        for key, value in state.items():
            yield from secrets_in(value, key)
    elif isinstance(state, list):
        for item in state:
            yield from secrets_in(item, field)
    elif isinstance(state, str) and field in SECRET_FIELDS:
        raw = base64.b64decode(state)
        if len(raw) >= 16:
            yield raw


class Secrets:
    """Every secret the clients held at any point of the journey (keys are deleted as they are
    used, so the state is sampled after each step)."""

    def __init__(self) -> None:
        self.keys: set[bytes] = set()

    def sample(self, *clients: VeilClient) -> None:
        for client in clients:
            if client.signed_in:
                self.keys.update(secrets_in(client.crypto.to_state()))

    def add(self, key: bytes) -> None:
        self.keys.add(key)

    def forms(self) -> list[str]:
        """Each key as base64 and as hex (how bytea prints in a dump)."""
        return [f for key in self.keys for f in (base64.b64encode(key).decode(), key.hex())]


def canary_forms(canary: str) -> list[str]:
    raw = canary.encode()
    forms = [canary, raw.hex()]
    for shift in range(3):
        chunk = raw[shift:]
        forms.append(base64.b64encode(chunk[: len(chunk) - len(chunk) % 3]).decode())
    return forms


def assert_clean(where: str, text: str, secrets: Secrets) -> None:
    lowered = text.lower()
    for name, canary in CANARIES.items():
        for form in canary_forms(canary):
            assert form.lower() not in lowered, f"canary {name} found in {where} as {form!r}"
    for form in secrets.forms():
        assert form not in text and form.lower() not in lowered, f"a client secret was found in {where}"


def assert_clean_bytes(where: str, blob: bytes, secrets: Secrets) -> None:
    for name, canary in CANARIES.items():
        assert canary.encode() not in blob, f"canary {name} found in {where}"
    for key in secrets.keys:
        assert key not in blob, f"a client secret was found in {where}"
    assert_clean(where, blob.decode("latin-1"), secrets)


def assert_bucket_clean(settings: Settings, secrets: Secrets) -> None:
    """Every object in the bucket (this test's and any other's)."""
    store = s3_client(settings)
    pages = store.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert keys
    for key in keys:
        stored = store.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
        assert_clean_bytes(f"object {key}", stored, secrets)


def run_maintenance(database_url: str, blobs: BlobStore, at: datetime) -> dict[str, int]:
    async def run() -> dict[str, int]:
        db = Database(database_url, max_size=2, timeout=5, metrics=Metrics())
        await db.open()
        try:
            counts = await Maintenance(db, blobs, FakeClock(at), KEEP_MESSAGES).run_once()
        finally:
            await db.close()
        assert counts is not None
        return counts

    return asyncio.run(run())


def message_rows(database_url: str) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return list(await conn.fetch("SELECT * FROM messages"))
        finally:
            await conn.close()

    return asyncio.run(fetch())


def grant_operator(database_url: str, email: str) -> None:
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "veil", "--env-file", "/dev/null", "operator", "grant", email]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def operator_views(api: LiveServer, database_url: str) -> list[str]:
    """The body of every GET an operator can make, over every user."""
    with api.client() as client:
        email = register(client)
        grant_operator(database_url, email)
        operator = login(client, email)
        bodies = []
        users = client.get("/v1/admin/users", params={"limit": 200}, headers=bearer(operator))
        assert users.status_code == 200, users.text
        bodies.append(users.text)
        for item in users.json()["items"]:
            one = client.get(f"/v1/admin/users/{item['user_id']}", headers=bearer(operator))
            assert one.status_code == 200
            bodies.append(one.text)
        for path in ("/v1/admin/incidents", "/v1/admin/audit"):
            response = client.get(path, headers=bearer(operator))
            assert response.status_code == 200, response.text
            bodies.append(response.text)
    return bodies


def test_the_server_never_holds_plaintext_or_keys(
    clients: Clients, api: LiveServer, settings: Settings, database_url: str, blobs: BlobStore
) -> None:
    secrets = Secrets()
    alice, bob, carol, dave = (clients.new(name) for name in ("alice", "bob", "carol", "dave"))
    everyone = (alice, bob, carol, dave)
    secrets.sample(*everyone)

    # 1:1 with receipts.
    direct = alice.create_direct(bob.user_id)
    alice.send_text(direct.conversation_id, CANARIES["dm1"])
    [first] = bob.history(direct.conversation_id)
    assert first.text == CANARIES["dm1"]
    bob.mark(direct.conversation_id, "delivered", first.seq)
    bob.mark(direct.conversation_id, "read", first.seq)
    bob.send_text(direct.conversation_id, CANARIES["dm2"])
    assert [m.text for m in alice.history(direct.conversation_id)] == [CANARIES["dm1"], CANARIES["dm2"]]
    secrets.sample(*everyone)

    # A group: invitations, a message, a removal (the epoch and the sender keys rotate), a join.
    group = alice.create_group()
    for member in (bob, carol):
        alice.invite(group.conversation_id, member.user_id)
        member.accept(group.conversation_id)
    alice.send_text(group.conversation_id, CANARIES["group1"])
    assert CANARIES["group1"] in [m.text for m in carol.history(group.conversation_id)]
    secrets.sample(*everyone)
    alice.remove(group.conversation_id, carol.user_id)
    alice.send_text(group.conversation_id, CANARIES["group2"])
    alice.invite(group.conversation_id, dave.user_id)
    dave.accept(group.conversation_id)
    dave.send_text(group.conversation_id, CANARIES["group3"])
    seen_by_bob = [m.text for m in bob.history(group.conversation_id)]
    assert CANARIES["group2"] in seen_by_bob and CANARIES["group3"] in seen_by_bob
    secrets.sample(*everyone)

    # A file with a secret body and a secret name.
    body = (CANARIES["file"] + "\n").encode() * 20_000
    sent = bob.send_file(group.conversation_id, io.BytesIO(body), name=CANARIES["file_name"])
    secrets.add(sent.reference.key)
    [file_message] = [m for m in alice.history(group.conversation_id) if m.content_type == "file"]
    received = io.BytesIO()
    assert alice.download_file(file_message, received).name == CANARIES["file_name"]
    assert received.getvalue() == body
    secrets.sample(*everyone)

    # An encrypted backup of Alice's history (the canaries she sent and read) in her backup slot.
    recovery_key = alice.create_backup({"contacts": {"bob": bob.user_id}}).recovery_key
    secrets.add(parse_recovery_key(recovery_key))
    assert alice.backup_status() is not None

    # An export, and an erasure carried through to the purge.
    export_request = alice.request_export()
    export_code = latest_code(settings, clients.emails["alice"], count=2)  # after her sign-up code
    archive = alice.fetch_export(alice.confirm_request(export_request, export_code))
    assert archive["profile"]["user_id"] == alice.user_id
    erasure = dave.request_erasure(PASSWORD)
    assert (
        dave.confirm_request(erasure, latest_code(settings, clients.emails["dave"], count=2))["type"]
        == "erasure"
    )
    secrets.sample(*everyone)
    assert_bucket_clean(settings, secrets)  # the export archive is there until the purge round
    counts = run_maintenance(database_url, blobs, datetime.now(UTC) + timedelta(days=30, minutes=1))
    assert counts["accounts_purged"] == 1

    assert len(secrets.keys) > 50  # the sampling found the clients' keys

    # What the server stores for each message: the envelope and documented metadata, nothing else.
    rows = message_rows(database_url)
    assert rows and all(set(row.keys()) == MESSAGE_COLUMNS for row in rows)
    assert {row["content_type"] for row in rows} <= {"text", "file", "reaction", "system"}
    with api.client() as client:
        pair = login(client, clients.emails["bob"])
        listed = client.get(f"/v1/conversations/{group.conversation_id}/messages", headers=bearer(pair))
        assert listed.status_code == 200
        assert all(set(item) == ENVELOPE_FIELDS - {"envelope_digest"} for item in listed.json()["items"])

    # The database, whole.
    assert_clean("the database dump", dump(database_url), secrets)
    assert_bucket_clean(settings, secrets)
    # Every log line of every server-side process, and every mail the server sent.
    assert_clean("the Veil log", api.logs(), secrets)
    for log in (settings.data_dir / "postgres").glob("*.log"):
        assert_clean(f"{log.name}", log.read_text(errors="replace"), secrets)
    for log in (settings.data_dir / "s3").glob("*.log"):
        assert_clean(f"{log.name}", log.read_text(errors="replace"), secrets)
    for mail in mail_dir(settings).glob("*.eml"):
        assert_clean(f"mail {mail.name}", mail.read_text(errors="replace"), secrets)
    # Everything an operator can see.
    for view in operator_views(api, database_url):
        assert_clean("an operator response", view, secrets)


def test_log_files_exist_where_the_proof_looks(settings: Settings) -> None:
    """The proof above searches these files; if they moved, it would search nothing."""
    assert list((settings.data_dir / "postgres").glob("*.log"))
    assert list((settings.data_dir / "s3").glob("*.log"))
    assert Path(mail_dir(settings)).is_dir()


def test_the_search_finds_what_it_looks_for() -> None:
    """The detectors themselves: a leak in any of the encodings searched is caught."""
    secrets = Secrets()
    key = bytes(range(32))
    secrets.add(key)
    canary = CANARIES["dm1"].encode()
    for leak in (
        CANARIES["dm1"],
        canary.hex(),
        "\\x" + canary.hex().upper(),
        base64.b64encode(b"xx" + canary).decode(),
        base64.b64encode(key).decode(),
        "\\x" + key.hex(),
    ):
        with pytest.raises(AssertionError):
            assert_clean("a planted leak", f"prefix {leak} suffix", secrets)
    with pytest.raises(AssertionError):
        assert_clean_bytes("a planted object", b"\0" + key + b"\0", secrets)
    assert_clean("clean text", "nothing to see here", secrets)
