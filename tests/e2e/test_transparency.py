"""Key transparency over the wire (issue 16): every master-key and certified-device change is a
leaf appended in the transaction of the change, heads are signed over the contract's bytes, proofs
verify with an independent verifier, the database refuses to change the log, and `veil
transparency verify` (and a client holding an older head) catches a log rewritten underneath."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tests.conftest import ServerFactory
from tests.e2e.test_account import LONG, ask, confirm, run_maintenance
from tests.e2e.test_identity import certificate, certify, keys_with, public, publish, reset, set_master, user
from tests.support.keys import bundle
from tests.support.mail import latest_code
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login
from veil.core.blobstore import BlobStore
from veil.core.config import Settings
from veil.transparency import tree
from veil.transparency.head import TreeHead, verify_head
from veil.transparency.leaf import CertifiedDevice, Leaf, leaf_for, user_hash


def get(client: httpx.Client, who: dict[str, Any], path: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/transparency/{path}", params=params, headers=bearer(who))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def raw(value: str) -> bytes:
    return base64.b64decode(value)


class Monitor:
    """What a client keeps: the log key and the latest head it has checked."""

    def __init__(self, client: httpx.Client, who: dict[str, Any]) -> None:
        self.client, self.who = client, who
        self.key = raw(get(client, who, "key")["public_key"])
        self.head: dict[str, Any] | None = None

    def fresh_head(self) -> dict[str, Any]:
        head = get(self.client, self.who, "head")
        assert set(head) == {"tree_size", "root_hash", "timestamp", "signature"}
        signed = TreeHead(
            head["tree_size"], head["timestamp"], raw(head["root_hash"]), raw(head["signature"]), self.key
        )
        assert verify_head(signed, self.key), "the head's signature does not verify"
        if self.head is not None:
            proof = get(
                self.client, self.who, "consistency", first=self.head["tree_size"], second=head["tree_size"]
            )
            assert (proof["first"], proof["second"]) == (self.head["tree_size"], head["tree_size"])
            tree.verify_consistency(
                self.head["tree_size"],
                head["tree_size"],
                raw(self.head["root_hash"]),
                raw(head["root_hash"]),
                [raw(h) for h in proof["proof"]],
            )
        self.head = head
        return head

    def leaf_of(self, user_id: str) -> Leaf:
        head = self.fresh_head()
        proof = get(self.client, self.who, "inclusion", user_id=user_id, tree_size=head["tree_size"])
        assert set(proof) == {"leaf_index", "leaf", "tree_size", "audit_path"}
        assert proof["tree_size"] == head["tree_size"]
        tree.verify_inclusion(
            raw(proof["leaf"]),
            proof["leaf_index"],
            head["tree_size"],
            [raw(h) for h in proof["audit_path"]],
            raw(head["root_hash"]),
        )
        leaf = Leaf.decode(raw(proof["leaf"]))
        assert leaf.is_of(uuid.UUID(user_id))
        return leaf


def listed_state(
    client: httpx.Client, reader: dict[str, Any], user_id: str
) -> tuple[bytes | None, list[CertifiedDevice]]:
    """The master key and certified devices the key directory shows."""
    body = client.get(f"/v1/users/{user_id}/devices", headers=bearer(reader)).json()
    devices = [
        CertifiedDevice(
            uuid.UUID(item["device_id"]),
            raw(item["identity_key"]),
            raw(item["signing_key"]),
            raw(item["certificate"]["signature"]),
        )
        for item in body["items"]
        if item["certificate"] is not None
    ]
    return (raw(body["master_key"]) if body["master_key"] else None), devices


def certified(
    client: httpx.Client,
    owner: dict[str, Any],
    device_id: str,
    master: Ed25519PrivateKey,
    keys: dict[str, Any],
) -> int:
    """Certify one of the owner's devices with `master`; the status."""
    signature = certificate(master, owner["user_id"], device_id, keys)
    return certify(client, owner, device_id, signature).status_code


def test_every_key_change_is_a_leaf_that_proofs_tie_to_signed_heads(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        monitor = Monitor(client, bob)
        start = monitor.fresh_head()["tree_size"]
        assert (
            client.get(
                "/v1/transparency/inclusion", params={"user_id": alice["user_id"]}, headers=bearer(bob)
            ).status_code
            == 404
        )

        versions: list[int] = []

        def expect_leaf(version: int) -> None:
            leaf = monitor.leaf_of(alice["user_id"])
            master, devices = listed_state(client, bob, alice["user_id"])
            assert leaf == leaf_for(uuid.UUID(alice["user_id"]), version, master, devices)
            versions.append(version)

        master = Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(master)).status_code == 201
        expect_leaf(1)
        assert set_master(client, alice, public(master)).status_code == 200  # a retry: no leaf
        keys = bundle()
        publish(client, alice, keys)  # an uncertified device: no leaf
        expect_leaf(1)
        assert certified(client, alice, alice["session_id"], master, keys) == 204
        expect_leaf(2)

        phone = login(client, alice["email"], device_name="phone")
        signing = Ed25519PrivateKey.generate()
        phone_keys = keys_with(signing)
        publish(client, phone, phone_keys)
        assert certified(client, alice, phone["session_id"], master, phone_keys) == 204
        expect_leaf(3)
        assert len(listed_state(client, bob, alice["user_id"])[1]) == 2
        # A new signed prekey leaves the certificate (and the leaf) as it was; a new signing key ends it.
        publish(client, phone, keys_with(signing, phone_keys["identity_key"], prekey_id=2))
        expect_leaf(3)
        phone_keys = keys_with(Ed25519PrivateKey.generate(), phone_keys["identity_key"], prekey_id=3)
        publish(client, phone, phone_keys)
        expect_leaf(4)

        new_master = Ed25519PrivateKey.generate()
        assert reset(client, alice, PASSWORD, public(new_master)).status_code == 200
        expect_leaf(5)
        assert listed_state(client, bob, alice["user_id"]) == (raw(public(new_master)), [])
        assert certified(client, alice, alice["session_id"], new_master, keys) == 204
        expect_leaf(6)
        assert certified(client, alice, phone["session_id"], new_master, phone_keys) == 204
        expect_leaf(7)
        # A password change ends every other session, and so the phone's certificate.
        changed = client.post(
            "/v1/account/password",
            json={"current_password": PASSWORD, "new_password": "a new passphrase for alice 9"},
            headers=bearer(alice),
        )
        assert changed.status_code == 204, changed.text
        expect_leaf(8)
        assert [d.device_id for d in listed_state(client, bob, alice["user_id"])[1]] == [
            uuid.UUID(alice["session_id"])
        ]
        assert client.post("/v1/auth/logout", headers=bearer(alice)).status_code == 204
        expect_leaf(9)
        assert versions == [1, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9]

        # Monitors read the raw leaves and rebuild the very root the head signs.
        head = monitor.fresh_head()
        assert head["tree_size"] == start + 9
        leaves, cursor = [], "0"
        while cursor is not None:
            page = get(client, bob, "entries", start=cursor, limit=3)
            leaves += [(item["index"], raw(item["leaf"])) for item in page["items"]]
            cursor = page["next_cursor"]
        assert [index for index, _ in leaves] == list(range(head["tree_size"]))
        assert tree.root_of(leaf for _, leaf in leaves) == raw(head["root_hash"])
        # The head is signed once per size: asking again gives the very same head.
        assert get(client, bob, "head") == head
        # An earlier size still proves the leaf the user had then.
        then = get(client, bob, "inclusion", user_id=alice["user_id"], tree_size=start + 2)
        assert Leaf.decode(raw(then["leaf"])).version == 2


def test_bad_questions_are_clear_problems(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        assert set_master(client, alice, public(Ed25519PrivateKey.generate())).status_code == 201
        size = get(client, alice, "head")["tree_size"]
        for path in (
            "key",
            "head",
            "entries",
            f"inclusion?user_id={alice['user_id']}",
            "consistency?first=0&second=0",
        ):
            assert client.get(f"/v1/transparency/{path}").status_code == 401
        cases = [
            ("consistency", {"first": size, "second": size - 1}, 422),
            ("consistency", {"first": 0, "second": size + 1}, 422),
            ("consistency", {"first": 1}, 422),
            ("consistency", {"first": "-1", "second": 1}, 422),
            ("inclusion", {"user_id": alice["user_id"], "tree_size": size + 1}, 422),
            ("inclusion", {"user_id": alice["user_id"], "tree_size": 0}, 422),
            ("inclusion", {"user_id": str(uuid.UUID(int=7)), "tree_size": size}, 404),
            ("inclusion", {"user_id": "not-a-uuid"}, 422),
            ("inclusion", {}, 422),
            ("entries", {"start": "x"}, 422),
            ("entries", {"limit": 0}, 422),
        ]
        for path, params, status in cases:
            response = client.get(f"/v1/transparency/{path}", params=params, headers=bearer(alice))
            assert response.status_code == status, (path, params, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        assert get(client, alice, "consistency", first=0, second=size)["proof"] == []
        assert get(client, alice, "consistency", first=size, second=size)["proof"] == []
        assert get(client, alice, "entries", start=size) == {"items": [], "next_cursor": None}


async def latest_leaf_in_table(db: asyncpg.Connection[asyncpg.Record], user_id: str) -> Leaf:
    """A user's latest leaf as a monitor reading the raw log (or the database) sees it."""
    found = await db.fetchval(
        "SELECT leaf FROM transparency_leaves WHERE substring(leaf from 1 for 32) = $1 "
        "ORDER BY index DESC LIMIT 1",
        user_hash(uuid.UUID(user_id)),
    )
    assert found is not None
    return Leaf.decode(bytes(found))


async def test_an_erasure_ends_in_a_leaf_without_keys_and_the_log_keeps_no_email(
    api: LiveServer,
    settings: Settings,
    db: asyncpg.Connection[asyncpg.Record],
    blobs: BlobStore,
    database_url: str,
) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        monitor = Monitor(client, bob)
        master = Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(master)).status_code == 201
        keys = bundle()
        publish(client, alice, keys)
        signature = certificate(master, alice["user_id"], alice["session_id"], keys)
        assert certify(client, alice, alice["session_id"], signature).status_code == 204
        assert monitor.leaf_of(alice["user_id"]).version == 2

        asked = ask(client, alice, type="erasure", password=PASSWORD)
        assert asked.status_code == 202, asked.text
        code = latest_code(settings, alice["email"], count=2)
        assert confirm(client, alice, asked.json()["request_id"], code).status_code == 202
        # Her sessions ended at once, and with them her devices: a leaf without devices. Like her
        # device listing, inclusion now answers nothing about her account (not even that it
        # exists); the leaf is in the log for monitors all the same.
        inclusion = client.get(
            "/v1/transparency/inclusion", params={"user_id": alice["user_id"]}, headers=bearer(bob)
        )
        assert inclusion.status_code == 404, inclusion.text
        disabled = await latest_leaf_in_table(db, alice["user_id"])
        assert (disabled.version, disabled.master_key) == (3, raw(public(master)))
        assert disabled == leaf_for(uuid.UUID(alice["user_id"]), 3, raw(public(master)), [])

    later = datetime.now(UTC) + timedelta(days=30, minutes=1)
    assert (await run_maintenance(database_url, blobs, later, LONG))["accounts_purged"] == 1
    with api.client() as client:
        # Thirty days on, Bob's session has expired too: he signs in again.
        monitor.client, monitor.who = client, login(client, bob["email"])
        monitor.fresh_head()  # the log only grew
    purged = await latest_leaf_in_table(db, alice["user_id"])
    assert purged == leaf_for(uuid.UUID(alice["user_id"]), 4, None, [])
    # The log names her by a hash only: neither her id nor her email is in it, in any form.
    needles = [alice["email"].encode(), uuid.UUID(alice["user_id"]).bytes, alice["user_id"].encode()]
    for (leaf,) in await db.fetch("SELECT leaf FROM transparency_leaves"):
        assert not any(needle in leaf for needle in needles)


@pytest.mark.parametrize("table", ["transparency_leaves", "transparency_nodes", "transparency_heads"])
async def test_the_database_refuses_to_change_the_log(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], table: str
) -> None:
    with api.client() as client:
        alice = user(client)
        assert set_master(client, alice, public(Ed25519PrivateKey.generate())).status_code == 201
        get(client, alice, "head")
    assert await db.fetchval(f"SELECT count(*) FROM {table}") >= 1  # noqa: S608
    column = {"transparency_leaves": "created_at = now()", "transparency_nodes": "level = level"}.get(
        table, "timestamp_ms = 0"
    )
    statements = (f"UPDATE {table} SET {column}", f"DELETE FROM {table}", f"TRUNCATE {table}")  # noqa: S608
    for statement in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)
    assert await db.fetchval(f"SELECT count(*) FROM {table}") >= 1  # noqa: S608


def verify_command(settings: Settings, database_url: str) -> subprocess.CompletedProcess[str]:
    assert settings.transparency_keys_file is not None
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": database_url,
        "VEIL_ENV": "test",
        "VEIL_DATA_DIR": str(settings.data_dir),
        "VEIL_TRANSPARENCY_KEYS_FILE": str(settings.transparency_keys_file),
    }
    command = [sys.executable, "-m", "veil", "--env-file", "/dev/null", "transparency", "verify"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


async def as_attacker(db: asyncpg.Connection[asyncpg.Record], *statements: tuple[str, list[Any]]) -> None:
    """Change the log the way someone with the database's superuser could: triggers off."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        for statement, args in statements:
            await db.execute(statement, *args)


async def test_verify_and_an_older_head_catch_a_rewritten_or_removed_leaf(
    api: LiveServer, settings: Settings, db: asyncpg.Connection[asyncpg.Record], database_url: str
) -> None:
    with api.client() as client:
        people = [user(client) for _ in range(3)]
        for person in people:
            assert set_master(client, person, public(Ed25519PrivateKey.generate())).status_code == 201
        monitor = Monitor(client, people[0])
        seen = monitor.fresh_head()
        size = seen["tree_size"]
        assert size == 3
    ok = verify_command(settings, database_url)
    assert ok.returncode == 0, ok.stderr
    assert "3 leaves and 1 signed heads verified" in ok.stderr

    # A rewritten leaf: another master key for the second user.
    original = await db.fetchval("SELECT leaf FROM transparency_leaves WHERE index = 1")
    forged = original[:40] + os.urandom(32) + original[72:]
    await as_attacker(db, ("UPDATE transparency_leaves SET leaf = $1 WHERE index = 1", [forged]))
    caught = verify_command(settings, database_url)
    assert caught.returncode == 1
    assert "leaf 1: the stored hash is not the leaf's" in caught.stderr

    # The same, with every stored hash redone to match (a careful attacker): verify catches the
    # signed head, and a client that saw the older head refuses the consistency proof to a newer one.
    leaves = [row["leaf"] for row in await db.fetch("SELECT leaf FROM transparency_leaves ORDER BY index")]
    compact, nodes = tree.CompactRange(), []
    for leaf in leaves:
        nodes += compact.push(leaf)
    await as_attacker(
        db,
        *(
            ("UPDATE transparency_nodes SET hash = $3 WHERE level = $1 AND index = $2", [n.level, n.index, h])
            for n, h in nodes
        ),
    )
    caught = verify_command(settings, database_url)
    assert caught.returncode == 1
    assert "head of size 3: its root does not match the leaves" in caught.stderr
    with api.client() as client:
        late = user(client)
        assert set_master(client, late, public(Ed25519PrivateKey.generate())).status_code == 201
        monitor.client = client
        with pytest.raises(tree.ProofError, match="first root"):
            monitor.fresh_head()

    # A removed leaf.
    await as_attacker(db, ("DELETE FROM transparency_leaves WHERE index = 2", []))
    caught = verify_command(settings, database_url)
    assert caught.returncode == 1
    assert "leaf 2 is missing (the next one is 3)" in caught.stderr


def transparency_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VEIL_ENV": "test"}
    command = [sys.executable, "-m", "veil", "--env-file", "/dev/null", "transparency", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_rotated_log_key_signs_new_heads_and_old_heads_still_verify(
    make_server: ServerFactory, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    keys_file = tmp_path / "transparency-keys.json"
    assert transparency_cli("rotate-key", str(keys_file)).returncode == 0
    first = make_server(
        VEIL_AUTH_RATE="10000", VEIL_AUTH_BURST="10000", VEIL_TRANSPARENCY_KEYS_FILE=str(keys_file)
    )
    with first.client() as client:
        alice = user(client)
        old_key = get(client, alice, "key")["public_key"]
        assert set_master(client, alice, public(Ed25519PrivateKey.generate())).status_code == 201
        old_head = Monitor(client, alice).fresh_head()
    first.stop()

    rotated = transparency_cli("rotate-key", str(keys_file))
    assert rotated.returncode == 0, rotated.stderr
    published = transparency_cli("keys", str(keys_file))
    assert published.returncode == 0, published.stderr
    new_key, older = published.stdout.split()
    assert older == old_key and new_key != old_key
    assert "private_key" not in json.loads(keys_file.read_text())["keys"][0]

    second = make_server(
        VEIL_AUTH_RATE="10000", VEIL_AUTH_BURST="10000", VEIL_TRANSPARENCY_KEYS_FILE=str(keys_file)
    )
    with second.client() as client:
        alice = login(client, alice["email"])
        served = get(client, alice, "key")
        assert served["public_key"] == new_key
        # The retired key vouches for its successor, so clients that pinned it can follow.
        [endorsement] = served["endorsements"]
        assert (endorsement["public_key"], endorsement["previous_key"]) == (new_key, old_key)
        Ed25519PublicKey.from_public_bytes(base64.b64decode(old_key)).verify(
            base64.b64decode(endorsement["signature"]), b"veil/log-key/v1" + base64.b64decode(new_key)
        )
        # Before the log grows, the head of the same size comes signed by the new key: a client
        # that checks /head against /key right after the rotation sees nothing amiss.
        same = Monitor(client, alice).fresh_head()
        assert (same["tree_size"], same["root_hash"]) == (old_head["tree_size"], old_head["root_hash"])
        bob = user(client)
        assert set_master(client, bob, public(Ed25519PrivateKey.generate())).status_code == 201
        monitor = Monitor(client, alice)  # trusts the new key; checks consistency from the old head
        monitor.head = old_head
        assert monitor.fresh_head()["tree_size"] == old_head["tree_size"] + 1
    env_settings = settings.model_copy(update={"transparency_keys_file": keys_file})
    verified = verify_command(env_settings, database_url)
    assert verified.returncode == 0, verified.stderr
    assert "2 signed heads verified" in verified.stderr


def test_concurrent_key_changes_make_a_gap_free_log(
    api: LiveServer, settings: Settings, database_url: str
) -> None:
    with api.client() as client:
        people = [user(client) for _ in range(6)]
        masters = [Ed25519PrivateKey.generate() for _ in people]
        bundles = [bundle() for _ in people]
        for person, keys in zip(people, bundles, strict=True):
            publish(client, person, keys)

    def change(i: int) -> None:
        person, master, keys = people[i], masters[i], bundles[i]
        with api.client() as own:
            assert set_master(own, person, public(master)).status_code == 201
            signature = certificate(master, person["user_id"], person["session_id"], keys)
            assert certify(own, person, person["session_id"], signature).status_code == 204

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(change, range(len(people))))
    with api.client() as client:
        monitor = Monitor(client, people[0])
        head = monitor.fresh_head()
        assert head["tree_size"] == 2 * len(people)
        for person in people:
            assert monitor.leaf_of(person["user_id"]).version == 2
    verified = verify_command(settings, database_url)
    assert verified.returncode == 0, verified.stderr
