"""Post-quantum (ML-KEM-768) prekeys on the real server (issue 15, PQXDH).

Attacks and failures these tests turn away: a server that could hand out a PQ key of its own (every
key is checked against the device's signing key over its key id, so neither another key's signature
nor a signature over another id passes), keys of the wrong size or private-key-sized blobs, a
request that half-applies, strangers draining one-time PQ keys past the device's hourly budget, and
keys that outlive their device.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.conftest import ServerFactory
from tests.support.keys import b64, one_time_prekeys, x25519_public
from tests.support.mail import latest_code
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, register
from tests.support.ws import next_frame, nothing_more, registered, ws_connect
from veil.core.config import Settings

CONTEXT = b"veil/pq-prekey/v1"
LIMITS = {"VEIL_AUTH_RATE": "10000", "VEIL_AUTH_BURST": "10000"}


def mlkem_public() -> bytes:
    return MLKEM768PrivateKey.generate().public_key().public_bytes_raw()


def pq_prekey(signing: Ed25519PrivateKey, key_id: int, public: bytes | None = None) -> dict[str, Any]:
    public = mlkem_public() if public is None else public
    signature = signing.sign(CONTEXT + struct.pack(">I", key_id) + public)
    return {"key_id": key_id, "public_key": b64(public), "signature": b64(signature)}


def pq_prekeys(signing: Ed25519PrivateKey, count: int, first_id: int) -> list[dict[str, Any]]:
    return [pq_prekey(signing, first_id + i) for i in range(count)]


class Device:
    """A signed-in device with its own signing key, so the test can sign PQ prekeys."""

    def __init__(self, client: httpx.Client, email: str | None = None) -> None:
        """A new account's device, or with `email` another device of that account."""
        self.client = client
        self.pair = login(client, email or register(client))
        self.signing = Ed25519PrivateKey.generate()
        self._next_classical_id = 1000

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.pair)

    @property
    def signing_key(self) -> str:
        return b64(self.signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def bundle(self, *, one_time: int = 0, **pq: Any) -> dict[str, Any]:
        signed_prekey = x25519_public()
        return {
            "identity_key": b64(x25519_public()),
            "signing_key": self.signing_key,
            "signed_prekey": {
                "key_id": 1,
                "public_key": b64(signed_prekey),
                "signature": b64(self.signing.sign(signed_prekey)),
            },
            "one_time_prekeys": one_time_prekeys(one_time, self._fresh_ids(one_time)),
            **pq,
        }

    def _fresh_ids(self, count: int) -> int:
        """The first of `count` classical one-time key ids never used by this device."""
        first = self._next_classical_id
        self._next_classical_id += count
        return first

    def publish(self, body: dict[str, Any]) -> httpx.Response:
        return self.client.put("/v1/keys", json=body, headers=self.headers)

    def add(self, body: dict[str, Any]) -> httpx.Response:
        return self.client.post("/v1/keys/one-time", json=body, headers=self.headers)

    def count(self) -> dict[str, int]:
        counts: dict[str, int] = self.client.get("/v1/keys/count", headers=self.headers).json()
        return counts

    def claim_from(self, owner: Device) -> dict[str, Any]:
        url = f"/v1/users/{owner.pair['user_id']}/devices/{owner.pair['session_id']}/claim"
        response = self.client.post(url, headers=self.headers)
        assert response.status_code == 200, response.text
        claimed: dict[str, Any] = response.json()
        return claimed


def verifies(claimed: dict[str, Any]) -> bool:
    """What a claimer checks: the PQ prekey's signature by the bundle's signing key."""
    pq = claimed["pq_prekey"]
    public = base64.b64decode(pq["public_key"])
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(claimed["signing_key"])).verify(
            base64.b64decode(pq["signature"]), CONTEXT + struct.pack(">I", pq["key_id"]) + public
        )
    except (InvalidSignature, ValueError):
        return False
    return len(public) == 1184


def without_last_resort(pq: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pq.items() if k != "last_resort"}


def test_publish_count_and_claim_one_time_then_last_resort(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = Device(client), Device(client)
        last_resort = pq_prekey(alice.signing, 1)
        one_time = pq_prekeys(alice.signing, 3, 10)
        body = alice.bundle(one_time=2, pq_last_resort_prekey=last_resort, pq_one_time_prekeys=one_time)
        published = alice.publish(body)
        assert published.status_code == 200, published.text
        assert published.json() == {"count": 2, "pq_count": 3}
        assert alice.count() == {"one_time_prekeys": 2, "pq_one_time_prekeys": 3}
        # The directory listing is unchanged: PQ keys are handed out by claims only.
        listed = client.get(f"/v1/users/{alice.pair['user_id']}/devices", headers=bob.headers).json()
        assert set(listed["items"][0]) == {
            "device_id",
            "identity_key",
            "signing_key",
            "signed_prekey",
            "certificate",
        }

        claims = [bob.claim_from(alice) for _ in range(5)]
        pq = [c["pq_prekey"] for c in claims]
        # One-time ones oldest first, each once; then the last-resort one, again and again.
        assert [without_last_resort(p) for p in pq[:3]] == one_time
        assert [p["last_resort"] for p in pq] == [False, False, False, True, True]
        assert [without_last_resort(p) for p in pq[3:]] == [last_resort, last_resort]
        assert all(verifies(c) for c in claims)
        assert alice.count() == {"one_time_prekeys": 0, "pq_one_time_prekeys": 0}

        # Published again without PQ members: the last-resort key stays.
        assert alice.publish(alice.bundle()).json() == {"count": 0, "pq_count": 0}
        assert without_last_resort(bob.claim_from(alice)["pq_prekey"]) == last_resort
        # So does an explicit null.
        assert alice.publish(alice.bundle(pq_last_resort_prekey=None)).status_code == 200
        assert without_last_resort(bob.claim_from(alice)["pq_prekey"]) == last_resort
        # A new one replaces it.
        newer = pq_prekey(alice.signing, 2)
        assert alice.publish(alice.bundle(pq_last_resort_prekey=newer)).status_code == 200
        assert bob.claim_from(alice)["pq_prekey"] == {**newer, "last_resort": True}
        # An identical re-publish (a retry) is harmless.
        assert alice.publish(alice.bundle(pq_last_resort_prekey=newer)).status_code == 200
        assert bob.claim_from(alice)["pq_prekey"] == {**newer, "last_resort": True}


def test_a_device_without_pq_keys_claims_null_and_one_time_only_keys_run_out_to_null(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob, carol = Device(client), Device(client), Device(client)
        assert alice.publish(alice.bundle(one_time=1)).json() == {"count": 1, "pq_count": 0}
        assert bob.claim_from(alice)["pq_prekey"] is None
        # One-time PQ keys but no last-resort one: null once they are gone.
        assert (
            carol.publish(carol.bundle(pq_one_time_prekeys=pq_prekeys(carol.signing, 1, 5))).status_code
            == 200
        )
        first = bob.claim_from(carol)["pq_prekey"]
        assert first["key_id"] == 5 and first["last_resort"] is False
        assert bob.claim_from(carol)["pq_prekey"] is None


def test_add_one_time_prekeys_with_either_list_or_both(api: LiveServer) -> None:
    with api.client() as client:
        alice = Device(client)
        early = alice.add({"pq_one_time_prekeys": pq_prekeys(alice.signing, 1, 1)})
        assert early.status_code == 409  # no keys published yet, as for classical ones
        assert alice.publish(alice.bundle(one_time=1)).status_code == 200

        only_pq = alice.add({"pq_one_time_prekeys": pq_prekeys(alice.signing, 2, 20)})
        assert only_pq.status_code == 200, only_pq.text
        assert only_pq.json() == {"count": 1, "pq_count": 2}
        only_classical = alice.add({"one_time_prekeys": one_time_prekeys(1, 30)})
        assert only_classical.json() == {"count": 2, "pq_count": 2}
        pq_batch = pq_prekeys(alice.signing, 3, 50)
        both = alice.add({"one_time_prekeys": one_time_prekeys(2, 40), "pq_one_time_prekeys": pq_batch})
        assert both.json() == {"count": 4, "pq_count": 5}
        # A retry of the same keys (Ed25519 signatures are deterministic) changes nothing.
        assert alice.add({"pq_one_time_prekeys": pq_batch}).json() == {"count": 4, "pq_count": 5}

        empties: list[dict[str, Any]] = [
            {},
            {"one_time_prekeys": []},
            {"pq_one_time_prekeys": []},
            {"one_time_prekeys": [], "pq_one_time_prekeys": []},
        ]
        for empty in empties:
            refused = alice.add(empty)
            assert refused.status_code == 422, (empty, refused.text)
        assert alice.count() == {"one_time_prekeys": 4, "pq_one_time_prekeys": 5}


def test_past_the_hourly_budget_a_claim_gets_the_last_resort_key(make_server: ServerFactory) -> None:
    server = make_server(VEIL_ONE_TIME_PREKEYS_PER_HOUR="2", **LIMITS)
    with server.client() as client:
        alice, stranger = Device(client), Device(client)
        last_resort = pq_prekey(alice.signing, 1)
        body = alice.bundle(
            one_time=5,
            pq_last_resort_prekey=last_resort,
            pq_one_time_prekeys=pq_prekeys(alice.signing, 5, 10),
        )
        assert alice.publish(body).status_code == 200
        claims = [stranger.claim_from(alice) for _ in range(4)]
        assert [c["pq_prekey"]["key_id"] for c in claims] == [10, 11, 1, 1]
        assert [c["pq_prekey"]["last_resort"] for c in claims] == [False, False, True, True]
        assert [c["one_time_prekey"] is None for c in claims] == [False, False, True, True]
        # The rest are kept for later claimers, not drained.
        assert alice.count() == {"one_time_prekeys": 3, "pq_one_time_prekeys": 3}


async def test_concurrent_claims_hand_out_each_one_time_pq_key_once(make_server: ServerFactory) -> None:
    server = make_server(VEIL_RATE_LIMITS="off")
    with server.client() as client:
        alice = Device(client)
        claimers = [Device(client) for _ in range(3)]
        one_time = pq_prekeys(alice.signing, 20, 100)
        body = alice.bundle(pq_last_resort_prekey=pq_prekey(alice.signing, 1), pq_one_time_prekeys=one_time)
        assert alice.publish(body).status_code == 200
    url = f"/v1/users/{alice.pair['user_id']}/devices/{alice.pair['session_id']}/claim"
    async with server.async_client() as client:
        responses = await asyncio.gather(
            *(client.post(url, headers=claimers[i % 3].headers) for i in range(30))
        )
    assert all(r.status_code == 200 for r in responses)
    handed = [r.json()["pq_prekey"] for r in responses]
    given = sorted(p["key_id"] for p in handed if not p["last_resort"])
    assert given == [k["key_id"] for k in one_time]  # each exactly once
    assert [p["key_id"] for p in handed if p["last_resort"]] == [1] * 10


def _sized(signing: Ed25519PrivateKey, key_id: int, size: int) -> dict[str, Any]:
    return pq_prekey(signing, key_id, os.urandom(size))


def _bad_pq_members(signing: Ed25519PrivateKey) -> list[tuple[str, dict[str, Any], list[Any] | None]]:
    """(what, PQ members of a request, the `loc` the 422 must name or None)."""
    other = Ed25519PrivateKey.generate()
    good = mlkem_public()
    by_other = pq_prekey(other, 7, good)
    over_other_id = {**pq_prekey(signing, 7, good), "key_id": 8}
    zero_t = bytes(1152) + os.urandom(32)
    return [
        ("1183-byte key", {"pq_last_resort_prekey": _sized(signing, 7, 1183)}, None),
        ("1185-byte key", {"pq_one_time_prekeys": [_sized(signing, 7, 1185)]}, None),
        (
            "63-byte signature",
            {"pq_one_time_prekeys": [{**pq_prekey(signing, 7), "signature": b64(os.urandom(63))}]},
            None,
        ),
        (
            "signature by another key",
            {"pq_one_time_prekeys": [pq_prekey(signing, 6), by_other]},
            ["pq_one_time_prekeys", 1, "signature"],
        ),
        (
            "signature over another key_id",
            {"pq_last_resort_prekey": over_other_id},
            ["pq_last_resort_prekey", "signature"],
        ),
        (
            "duplicate one-time key ids",
            {"pq_one_time_prekeys": [pq_prekey(signing, 7), pq_prekey(signing, 7)]},
            ["pq_one_time_prekeys", 1, "key_id"],
        ),
        (
            "last-resort id among the one-time ids",
            {"pq_last_resort_prekey": pq_prekey(signing, 7), "pq_one_time_prekeys": [pq_prekey(signing, 7)]},
            ["pq_one_time_prekeys", 0, "key_id"],
        ),
        ("too many keys", {"pq_one_time_prekeys": pq_prekeys(signing, 101, 200)}, None),
        ("a 64-byte private seed", {"pq_last_resort_prekey": _sized(signing, 7, 64)}, None),
        ("a 2400-byte expanded private key", {"pq_one_time_prekeys": [_sized(signing, 7, 2400)]}, None),
        (
            "random bytes, not an ML-KEM key",
            {"pq_last_resort_prekey": _sized(signing, 7, 1184)},
            ["pq_last_resort_prekey", "public_key"],
        ),
        (
            "a key with t = 0",
            {"pq_last_resort_prekey": pq_prekey(signing, 7, zero_t)},
            ["pq_last_resort_prekey", "public_key"],
        ),
        (
            "a private member",
            {"pq_one_time_prekeys": [{**pq_prekey(signing, 7), "private_key": b64(os.urandom(64))}]},
            None,
        ),
        ("key_id past u32", {"pq_last_resort_prekey": pq_prekey(signing, 0) | {"key_id": 2**32}}, None),
        ("not a list", {"pq_one_time_prekeys": pq_prekey(signing, 7)}, None),
    ]


async def _pq_rows(database_url: str) -> list[tuple[str, int, bytes]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT 'last_resort' AS kind, key_id, public_key FROM pq_last_resort_prekeys
               UNION ALL SELECT 'one_time', key_id, public_key FROM pq_one_time_prekeys
               ORDER BY 1, 2"""
        )
    finally:
        await conn.close()
    return [(r["kind"], r["key_id"], r["public_key"]) for r in rows]


def _assert_validation_problem(response: httpx.Response, loc: list[Any] | None, what: str) -> None:
    assert response.status_code == 422, (what, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), what
    problem = response.json()
    assert problem["status"] == 422 and problem["errors"], what
    if loc is not None:
        assert [e["loc"] for e in problem["errors"]] == [loc], (what, problem)


async def test_bad_pq_prekeys_are_a_422_that_changes_nothing(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        alice = Device(client)
        body = alice.bundle(
            one_time=1,
            pq_last_resort_prekey=pq_prekey(alice.signing, 1),
            pq_one_time_prekeys=pq_prekeys(alice.signing, 2, 2),
        )
        assert alice.publish(body).status_code == 200
        listing_url = f"/v1/users/{alice.pair['user_id']}/devices"
        listing = client.get(listing_url, headers=alice.headers).json()
        rows = await _pq_rows(database_url)
        for what, members, loc in _bad_pq_members(alice.signing):
            # A new identity, signed prekey and classical keys ride along: none of them may stick.
            _assert_validation_problem(alice.publish(alice.bundle(one_time=1, **members)), loc, f"PUT {what}")
            # POST carries no last-resort key: cases about one-time keys only are tried there too.
            one_time = members.get("pq_one_time_prekeys")
            if isinstance(one_time, list) and "pq_last_resort_prekey" not in members:
                added = alice.add(
                    {"one_time_prekeys": one_time_prekeys(1, 900), "pq_one_time_prekeys": one_time}
                )
                _assert_validation_problem(added, loc, f"POST {what}")
            assert client.get(listing_url, headers=alice.headers).json() == listing, what
            assert alice.count() == {"one_time_prekeys": 1, "pq_one_time_prekeys": 2}, what
            assert await _pq_rows(database_url) == rows, what


async def test_a_request_refused_half_way_leaves_nothing_behind(api: LiveServer, database_url: str) -> None:
    """Refusals found only in the database (the per-device cap, a key id held with other bytes)
    come after the device's keys were written: the one transaction undoes them all."""
    with api.client() as client:
        alice = Device(client)
        assert (
            alice.publish(
                alice.bundle(one_time=1, pq_one_time_prekeys=pq_prekeys(alice.signing, 2, 2))
            ).status_code
            == 200
        )
        listing_url = f"/v1/users/{alice.pair['user_id']}/devices"
        listing = client.get(listing_url, headers=alice.headers).json()
        rows = await _pq_rows(database_url)

        past_cap = alice.bundle(
            one_time=3,
            pq_last_resort_prekey=pq_prekey(alice.signing, 1),
            pq_one_time_prekeys=pq_prekeys(alice.signing, 99, 10),
        )
        refused = alice.publish(past_cap)
        _assert_validation_problem(refused, ["pq_one_time_prekeys"], "PUT past the cap")
        added = alice.add(
            {
                "one_time_prekeys": one_time_prekeys(3, 900),
                "pq_one_time_prekeys": pq_prekeys(alice.signing, 99, 10),
            }
        )
        _assert_validation_problem(added, ["pq_one_time_prekeys"], "POST past the cap")

        clash = [pq_prekey(alice.signing, 20), pq_prekey(alice.signing, 2)]  # id 2 is held with other bytes
        conflicting = alice.publish(
            alice.bundle(
                one_time=3, pq_last_resort_prekey=pq_prekey(alice.signing, 1), pq_one_time_prekeys=clash
            )
        )
        assert conflicting.status_code == 409 and conflicting.json()["key_ids"] == [2]
        assert (
            alice.add(
                {"one_time_prekeys": one_time_prekeys(3, 900), "pq_one_time_prekeys": clash}
            ).status_code
            == 409
        )

        assert client.get(listing_url, headers=alice.headers).json() == listing
        assert alice.count() == {"one_time_prekeys": 1, "pq_one_time_prekeys": 2}
        assert await _pq_rows(database_url) == rows
        # Up to the cap is fine.
        assert alice.add({"pq_one_time_prekeys": pq_prekeys(alice.signing, 98, 10)}).json()["pq_count"] == 100


async def test_one_time_pq_keys_must_be_signed_by_the_current_signing_key(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = Device(client), Device(client)
        old_signing = alice.signing
        body = alice.bundle(
            pq_last_resort_prekey=pq_prekey(old_signing, 1), pq_one_time_prekeys=pq_prekeys(old_signing, 2, 2)
        )
        assert alice.publish(body).status_code == 200
        alice.signing = Ed25519PrivateKey.generate()  # the device rotates its signing key
        assert alice.publish(alice.bundle()).json() == {"count": 0, "pq_count": 0}
        # The keys the old one signed are gone: no claimer is handed a key that fails to verify.
        assert bob.claim_from(alice)["pq_prekey"] is None
        stale = alice.add({"pq_one_time_prekeys": pq_prekeys(old_signing, 1, 10)})
        _assert_validation_problem(stale, ["pq_one_time_prekeys", 0, "signature"], "old signing key")
        fresh = alice.add({"pq_one_time_prekeys": pq_prekeys(alice.signing, 1, 10)})
        assert fresh.json() == {"count": 0, "pq_count": 1}
        assert verifies(bob.claim_from(alice))


@pytest.mark.parametrize(
    ("table", "column", "size"),
    [
        ("pq_one_time_prekeys", "public_key", 1183),
        ("pq_one_time_prekeys", "public_key", 1185),
        ("pq_one_time_prekeys", "signature", 63),
        ("pq_last_resort_prekeys", "public_key", 1183),
        ("pq_last_resort_prekeys", "public_key", 1185),
        ("pq_last_resort_prekeys", "signature", 63),
    ],
)
async def test_the_database_refuses_wrong_lengths(
    api: LiveServer, database_url: str, table: str, column: str, size: int
) -> None:
    with api.client() as client:
        alice = Device(client)
        assert alice.publish(alice.bundle()).status_code == 200
    values = {"public_key": mlkem_public(), "signature": os.urandom(64)}
    values[column] = os.urandom(size)
    conn = await asyncpg.connect(database_url)
    try:
        insert = f"""INSERT INTO {table} (device_id, key_id, public_key, signature, created_at)
                     VALUES ($1, $2, $3, $4, now())"""  # noqa: S608 - constant table names
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                insert, uuid.UUID(alice.pair["session_id"]), 1, values["public_key"], values["signature"]
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                insert, uuid.UUID(alice.pair["session_id"]), 2**32, mlkem_public(), os.urandom(64)
            )
        # The right sizes go in: the refusals above are the length checks, not something else.
        await conn.execute(insert, uuid.UUID(alice.pair["session_id"]), 3, mlkem_public(), os.urandom(64))
    finally:
        await conn.close()


async def _rows_of(database_url: str, device_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            """SELECT (SELECT count(*) FROM pq_one_time_prekeys WHERE device_id = $1)
                    + (SELECT count(*) FROM pq_last_resort_prekeys WHERE device_id = $1)""",
            uuid.UUID(device_id),
        )
    finally:
        await conn.close()
    return count


async def test_pq_keys_go_with_their_device(api: LiveServer, database_url: str, settings: Settings) -> None:
    """Logout, a session ended from another device, and erasure each remove the device's PQ keys."""
    with api.client() as client:
        email = register(client)
        devices = [Device(client, email) for _ in range(3)]
        for device in devices:
            body = device.bundle(
                pq_last_resort_prekey=pq_prekey(device.signing, 1),
                pq_one_time_prekeys=pq_prekeys(device.signing, 3, 2),
            )
            assert device.publish(body).status_code == 200
        laptop, phone, tablet = devices
        assert [await _rows_of(database_url, d.pair["session_id"]) for d in devices] == [4, 4, 4]

        assert client.post("/v1/auth/logout", headers=laptop.headers).status_code == 204
        assert await _rows_of(database_url, laptop.pair["session_id"]) == 0

        ended = client.delete(f"/v1/auth/sessions/{phone.pair['session_id']}", headers=tablet.headers)
        assert ended.status_code == 204, ended.text
        assert await _rows_of(database_url, phone.pair["session_id"]) == 0

        asked = client.post(
            "/v1/account/requests", json={"type": "erasure", "password": PASSWORD}, headers=tablet.headers
        )
        assert asked.status_code == 202, asked.text
        code = latest_code(settings, email, count=2)  # after the sign-up code
        confirmed = client.post(
            f"/v1/account/requests/{asked.json()['request_id']}/confirm",
            json={"code": code},
            headers=tablet.headers,
        )
        assert confirmed.status_code == 202, confirmed.text
        assert await _rows_of(database_url, tablet.pair["session_id"]) == 0


def test_the_openapi_document_shows_the_pq_members(api: LiveServer) -> None:
    with api.client() as client:
        document = client.get("/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    publish = schemas["PublishKeys"]
    assert {"pq_last_resort_prekey", "pq_one_time_prekeys"} <= set(publish["properties"])
    assert set(publish["required"]) == {"identity_key", "signing_key", "signed_prekey"}
    assert publish["properties"]["pq_one_time_prekeys"]["maxItems"] == 100
    key = schemas["PqPrekey"]["properties"]["public_key"]
    assert key["minLength"] == key["maxLength"] == 1580  # base64 of 1184 bytes
    assert schemas["PqPrekey"]["properties"]["signature"]["maxLength"] == 88
    assert "pq_one_time_prekeys" in schemas["AddOneTimePrekeys"]["properties"]
    assert len(schemas["AddOneTimePrekeys"]["anyOf"]) == 2
    assert set(schemas["PrekeyCount"]["properties"]) == {"count", "pq_count"}
    assert set(schemas["RemainingPrekeys"]["properties"]) == {"one_time_prekeys", "pq_one_time_prekeys"}
    assert "pq_prekey" in schemas["ClaimedBundle"]["properties"]
    assert set(schemas["PqPrekeyView"]["properties"]) == {"key_id", "public_key", "signature", "last_resort"}


def test_the_export_lists_the_devices_pq_prekeys(api: LiveServer, settings: Settings) -> None:
    with api.client() as client:
        email = register(client)
        alice = Device(client, email)
        last_resort = pq_prekey(alice.signing, 7)
        body = alice.bundle(
            pq_last_resort_prekey=last_resort, pq_one_time_prekeys=pq_prekeys(alice.signing, 2, 8)
        )
        assert alice.publish(body).status_code == 200
        asked = client.post("/v1/account/requests", json={"type": "export"}, headers=alice.headers)
        assert asked.status_code == 202, asked.text
        code = latest_code(settings, email, count=2)  # after the sign-up code
        done = client.post(
            f"/v1/account/requests/{asked.json()['request_id']}/confirm",
            json={"code": code},
            headers=alice.headers,
        )
        assert done.status_code == 200, done.text
    archive = httpx.get(done.json()["download"]["url"]).json()
    [device] = archive["devices"]
    assert device["pq_last_resort_prekey_id"] == 7
    assert device["pq_last_resort_prekey"] == last_resort["public_key"]
    assert device["pq_one_time_prekeys_left"] == 2


async def test_the_owner_hears_prekeys_low_when_one_time_pq_prekeys_run_low(
    make_server: ServerFactory,
) -> None:
    """Plenty of classical one-time prekeys, few PQ ones: the owner is told when fewer than 10
    PQ ones are left (the reference client keeps 20), so set-ups do not all fall back to the
    last-resort key."""
    server = make_server(**LIMITS)
    with server.client() as client:
        owner, claimer = Device(client), Device(client)
        body = owner.bundle(
            one_time=100,
            pq_last_resort_prekey=pq_prekey(owner.signing, 1),
            pq_one_time_prekeys=pq_prekeys(owner.signing, 11, 10),
        )
        assert owner.publish(body).status_code == 200
    async with ws_connect(server, owner.pair) as ws:
        await registered(ws)
        with server.client() as client:
            claimer.client = client
            assert claimer.claim_from(owner)["pq_prekey"]["last_resort"] is False  # 10 left
            assert await nothing_more(ws, "prekeys_low")
            assert claimer.claim_from(owner)["pq_prekey"]["last_resort"] is False  # 9 left
        low = await next_frame(ws, "prekeys_low")
        assert low == {"type": "prekeys_low", "one_time_prekeys": 98}


def test_a_one_time_pq_prekey_is_handed_out_once_even_if_uploaded_again(api: LiveServer) -> None:
    """Claimed one-time PQ keys are deleted, but their ids are remembered: a retried upload of a
    key already handed out is ignored, so no second initiator ever gets it."""
    with api.client() as client:
        owner, claimer = Device(client), Device(client)
        once = pq_prekeys(owner.signing, 1, 10)
        body = owner.bundle(pq_last_resort_prekey=pq_prekey(owner.signing, 1), pq_one_time_prekeys=once)
        assert owner.publish(body).status_code == 200
        first = claimer.claim_from(owner)["pq_prekey"]
        assert (first["key_id"], first["last_resort"]) == (10, False)
        assert owner.add({"pq_one_time_prekeys": once}).status_code == 200  # a retry, say
        assert owner.count()["pq_one_time_prekeys"] == 0
        again = claimer.claim_from(owner)["pq_prekey"]
        assert (again["key_id"], again["last_resort"]) == (1, True)
