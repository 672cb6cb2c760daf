"""Master keys and device certificates over the wire: set once, read by anyone signed in, certify
only one's own devices with a signature that verifies, lose certificates when keys change or the
master key is reset, and tell the right sockets (`identity_changed`, `device_pending`)."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.keys import b64, bundle, one_time_prekeys, x25519_public
from tests.support.messaging import group
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, register
from tests.support.ws import next_frame, nothing_more, registered, ws_connect

CONTEXT = b"veil/device-certificate/v1"


def user(client: httpx.Client) -> dict[str, Any]:
    """A signed-in device of a new user; `email` is kept for more sessions (devices) of theirs."""
    email = register(client)
    return {**login(client, email), "email": email}


def second_session(client: httpx.Client, pair: dict[str, Any]) -> dict[str, Any]:
    return login(client, pair["email"])


def public(key: Ed25519PrivateKey) -> str:
    return b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def keys_with(signing: Ed25519PrivateKey, identity: str | None = None, prekey_id: int = 1) -> dict[str, Any]:
    """A bundle signed by `signing`, with this identity key (a new one by default)."""
    signed_prekey = x25519_public()
    return {
        "identity_key": identity or b64(x25519_public()),
        "signing_key": public(signing),
        "signed_prekey": {
            "key_id": prekey_id,
            "public_key": b64(signed_prekey),
            "signature": b64(signing.sign(signed_prekey)),
        },
        "one_time_prekeys": one_time_prekeys(2, first_id=prekey_id * 10),
    }


def certificate(master: Ed25519PrivateKey, user_id: str, device_id: str, keys: dict[str, Any]) -> str:
    payload = (
        CONTEXT
        + uuid.UUID(user_id).bytes
        + uuid.UUID(device_id).bytes
        + base64.b64decode(keys["identity_key"])
        + base64.b64decode(keys["signing_key"])
    )
    return b64(master.sign(payload))


def publish(client: httpx.Client, who: dict[str, Any], keys: dict[str, Any]) -> None:
    response = client.put("/v1/keys", json=keys, headers=bearer(who))
    assert response.status_code == 200, response.text


def set_master(client: httpx.Client, who: dict[str, Any], key: str) -> httpx.Response:
    return client.put("/v1/identity", json={"master_key": key}, headers=bearer(who))


def certify(client: httpx.Client, who: dict[str, Any], device_id: str, signature: str) -> httpx.Response:
    return client.put(
        f"/v1/devices/{device_id}/certificate", json={"signature": signature}, headers=bearer(who)
    )


def listing(client: httpx.Client, reader: dict[str, Any], user_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/users/{user_id}/devices", headers=bearer(reader))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def certificates(client: httpx.Client, reader: dict[str, Any], user_id: str) -> dict[str, Any]:
    return {item["device_id"]: item["certificate"] for item in listing(client, reader, user_id)["items"]}


def identity(client: httpx.Client, reader: dict[str, Any], user_id: str) -> httpx.Response:
    return client.get(f"/v1/users/{user_id}/identity", headers=bearer(reader))


def reset(client: httpx.Client, who: dict[str, Any], password: str, key: str) -> httpx.Response:
    return client.post(
        "/v1/identity/reset", json={"password": password, "master_key": key}, headers=bearer(who)
    )


def test_a_master_key_is_set_once_and_anyone_signed_in_reads_it(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        assert identity(client, bob, alice["user_id"]).status_code == 404
        assert identity(client, bob, str(uuid.uuid4())).status_code == 404
        assert listing(client, bob, alice["user_id"])["master_key"] is None

        key = public(Ed25519PrivateKey.generate())
        created = set_master(client, alice, key)
        assert created.status_code == 201, created.text
        assert created.json()["master_key"] == key
        again = set_master(client, alice, key)
        assert again.status_code == 200, again.text
        assert again.json() == created.json()
        other = set_master(client, alice, public(Ed25519PrivateKey.generate()))
        assert other.status_code == 409, other.text

        read = identity(client, bob, alice["user_id"])
        assert read.status_code == 200, read.text
        assert read.json() == created.json()
        assert set(read.json()) == {"user_id", "master_key", "changed_at"}
        assert read.json()["user_id"] == alice["user_id"]
        assert listing(client, bob, alice["user_id"])["master_key"] == key
        assert identity(client, alice, bob["user_id"]).status_code == 404


# Not base64, too short, too long, all zero (not a usable key), unpadded, not a string.
MALFORMED: list[Any] = [
    "not base64!",
    b64(os.urandom(31)),
    b64(os.urandom(33)),
    b64(os.urandom(64)),
    b64(bytes(32)),
    base64.b64encode(os.urandom(32)).decode().rstrip("="),
    32,
]


def test_malformed_master_keys_and_signatures_are_422_and_change_nothing(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        for value in MALFORMED:
            refused = [
                client.put("/v1/identity", json={"master_key": value}, headers=bearer(alice)),
                reset(client, alice, PASSWORD, value),
            ]
            assert [r.status_code for r in refused] == [422, 422], (value, [r.text for r in refused])
        assert identity(client, alice, alice["user_id"]).status_code == 404

        master = Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(master)).status_code == 201
        keys = bundle()
        publish(client, alice, keys)
        good = certificate(master, alice["user_id"], alice["session_id"], keys)
        for value in [*MALFORMED, b64(os.urandom(63)), good[:-4], good + "AAAA"]:
            response = certify(client, alice, alice["session_id"], value)
            assert response.status_code == 422, (value, response.text)
        extra = client.put(
            f"/v1/devices/{alice['session_id']}/certificate",
            json={"signature": good, "x": 1},
            headers=bearer(alice),
        )
        assert extra.status_code == 422
        assert certificates(client, alice, alice["user_id"]) == {alice["session_id"]: None}
        assert identity(client, alice, alice["user_id"]).json()["master_key"] == public(master)


def test_a_certificate_by_the_owner_shows_in_the_listing_and_the_claim(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        master = Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(master)).status_code == 201
        keys = bundle()
        publish(client, alice, keys)
        signature = certificate(master, alice["user_id"], alice["session_id"], keys)

        done = certify(client, alice, alice["session_id"], signature)
        assert done.status_code == 204, done.text
        assert certify(client, alice, alice["session_id"], signature).status_code == 204  # idempotent

        listed = listing(client, bob, alice["user_id"])
        assert listed["master_key"] == public(master)
        [item] = listed["items"]
        assert item["certificate"] == {"signature": signature}
        assert item["identity_key"] == keys["identity_key"]
        claimed = client.post(
            f"/v1/users/{alice['user_id']}/devices/{alice['session_id']}/claim", headers=bearer(bob)
        )
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["certificate"] == {"signature": signature}
        assert claimed.json()["one_time_prekey"] is not None


def test_certificates_that_do_not_verify_or_are_not_ones_own_are_refused(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        master, bobs_master, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
        keys = bundle()
        publish(client, alice, keys)
        good = certificate(master, alice["user_id"], alice["session_id"], keys)
        # No master key set yet: nothing verifies.
        assert certify(client, alice, alice["session_id"], good).status_code == 422

        assert set_master(client, alice, public(master)).status_code == 201
        assert set_master(client, bob, public(bobs_master)).status_code == 201
        bobs_keys = bundle()
        publish(client, bob, bobs_keys)
        refused = [
            # Random bytes, another key's signature, and the master key's signature over other bytes.
            certify(client, alice, alice["session_id"], b64(os.urandom(64))),
            certify(
                client,
                alice,
                alice["session_id"],
                certificate(stranger, alice["user_id"], alice["session_id"], keys),
            ),
            certify(
                client,
                alice,
                alice["session_id"],
                certificate(master, bob["user_id"], alice["session_id"], keys),
            ),
            certify(
                client,
                alice,
                alice["session_id"],
                certificate(master, alice["user_id"], alice["session_id"], bobs_keys),
            ),
        ]
        assert [r.status_code for r in refused] == [422] * 4, [r.text for r in refused]

        # Someone else's device is a 404, even with a signature its owner's key would accept.
        mine_over_bobs = certificate(master, alice["user_id"], bob["session_id"], bobs_keys)
        assert certify(client, alice, bob["session_id"], mine_over_bobs).status_code == 404
        bobs_own = certificate(bobs_master, bob["user_id"], bob["session_id"], bobs_keys)
        assert certify(client, alice, bob["session_id"], bobs_own).status_code == 404
        # A device of the caller without keys, and a device that does not exist.
        keyless = second_session(client, alice)
        assert certify(client, alice, keyless["session_id"], good).status_code == 404
        assert certify(client, alice, str(uuid.uuid4()), good).status_code == 404
        assert certify(client, alice, "not-a-uuid", good).status_code == 404

        assert certificates(client, alice, alice["user_id"]) == {alice["session_id"]: None}
        assert certificates(client, alice, bob["user_id"]) == {bob["session_id"]: None}


def test_a_changed_identity_or_signing_key_drops_the_certificate(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        master = Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(master)).status_code == 201
        device = alice["session_id"]

        def certified(keys: dict[str, Any]) -> None:
            assert (
                certify(
                    client, alice, device, certificate(master, alice["user_id"], device, keys)
                ).status_code
                == 204
            )
            assert certificates(client, alice, alice["user_id"])[device] is not None

        signing = Ed25519PrivateKey.generate()
        keys = keys_with(signing)
        publish(client, alice, keys)
        certified(keys)
        # A new signed prekey under the same identity and signing keys keeps the certificate.
        publish(client, alice, keys_with(signing, keys["identity_key"], prekey_id=2))
        assert certificates(client, alice, alice["user_id"])[device] is not None
        # A new identity key drops it.
        changed = keys_with(signing, prekey_id=3)
        publish(client, alice, changed)
        assert certificates(client, alice, alice["user_id"])[device] is None
        # The old certificate does not fit the new keys; a new one does. A new signing key drops it.
        old = certificate(master, alice["user_id"], device, keys)
        assert certify(client, alice, device, old).status_code == 422
        certified(changed)
        publish(client, alice, keys_with(Ed25519PrivateKey.generate(), changed["identity_key"], prekey_id=4))
        assert certificates(client, alice, alice["user_id"])[device] is None


async def test_a_reset_needs_the_password_drops_every_certificate_and_tells_contacts(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob, stranger = user(client), user(client), user(client)
        laptop = second_session(client, alice)
        group(client, alice, bob)
        master = Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(master)).status_code == 201
        for device in (alice, laptop):
            keys = bundle()
            publish(client, device, keys)
            signature = certificate(master, alice["user_id"], device["session_id"], keys)
            assert certify(client, alice, device["session_id"], signature).status_code == 204
        before = certificates(client, bob, alice["user_id"])
        assert all(before.values()) and len(before) == 2

    new_master = public(Ed25519PrivateKey.generate())
    async with ws_connect(api, bob) as ws_bob, ws_connect(api, stranger) as ws_stranger:
        await registered(ws_bob)
        await registered(ws_stranger)
        with api.client() as client:
            wrong = reset(client, laptop, "not the password at all", new_master)
            assert wrong.status_code == 403, wrong.text
            assert certificates(client, bob, alice["user_id"]) == before
            assert identity(client, bob, alice["user_id"]).json()["master_key"] == public(master)
            assert await nothing_more(ws_bob, "identity_changed", wait=0.5)

            done = reset(client, laptop, PASSWORD, new_master)
            assert done.status_code == 200, done.text
            assert done.json()["master_key"] == new_master
            assert done.json()["user_id"] == alice["user_id"]
            changed = await next_frame(ws_bob, "identity_changed")
            assert changed == {
                "type": "identity_changed",
                "user_id": alice["user_id"],
                "master_key": new_master,
            }
            assert identity(client, bob, alice["user_id"]).json() == done.json()
            assert certificates(client, bob, alice["user_id"]) == dict.fromkeys(before)
            assert listing(client, bob, alice["user_id"])["master_key"] == new_master
        # Someone who shares no conversation with alice hears nothing.
        assert await nothing_more(ws_stranger, "identity_changed", wait=0.5)


def test_reset_attempts_take_slots_of_the_password_budget(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        key = public(Ed25519PrivateKey.generate())
        statuses = [reset(client, alice, f"wrong password {i}", key).status_code for i in range(10)]
        assert statuses == [403] * 10
        limited = reset(client, alice, PASSWORD, key)
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["Retry-After"]) > 0
        assert identity(client, alice, alice["user_id"]).status_code == 404


async def test_a_new_device_is_pending_on_the_users_other_devices(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        phone = second_session(client, alice)
        master = Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(master)).status_code == 201
        publish(client, alice, bundle())
    async with ws_connect(api, alice) as ws:
        await registered(ws)
        with api.client() as client:
            keys = bundle()
            publish(client, phone, keys)
            pending = await next_frame(ws, "device_pending")
            assert pending == {"type": "device_pending", "device_id": phone["session_id"]}
            # Publishing new identity and signing keys again asks for approval again, once.
            publish(client, phone, bundle(signed_prekey_id=2, first_one_time_id=100))
            again = await next_frame(ws, "device_pending")
            assert again == {"type": "device_pending", "device_id": phone["session_id"]}
            assert await nothing_more(ws, "device_pending", wait=0.5)
            # Approving it is a key change the user's devices (and contacts) hear of. A certificate
            # of the keys first published no longer fits: the second bundle replaced them.
            signature = certificate(master, alice["user_id"], phone["session_id"], keys)
            assert certify(client, alice, phone["session_id"], signature).status_code == 422
            current = listing(client, alice, alice["user_id"])["items"]
            phone_keys = next(item for item in current if item["device_id"] == phone["session_id"])
            signature = certificate(master, alice["user_id"], phone["session_id"], phone_keys)
            assert certify(client, alice, phone["session_id"], signature).status_code == 204
            certified = await next_frame(ws, "keys_changed")
            while certified["change"] != "device_certified":
                certified = await next_frame(ws, "keys_changed")
            assert certified["device_id"] == phone["session_id"]


P = 2**255 - 19
SIGN_BIT = 1 << 255
# libsodium's small-order y values (identity, order 2, order 4, the two of order 8).
SMALL_ORDER_Y = [
    1,
    P - 1,
    0,
    int.from_bytes(
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
    ),
    int.from_bytes(
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"
    ),
]


def encoded(y: int, negative_x: bool = False) -> str:
    return b64((y | (SIGN_BIT if negative_x else 0)).to_bytes(32, "little"))


# Each small-order point with both signs of x, and y >= p (a second spelling of y - p, including
# of a valid key's y): a key with two spellings is two pins, two safety numbers.
WEAK_MASTER_KEYS = [
    *(encoded(y, sign) for y in SMALL_ORDER_Y for sign in (False, True)),
    encoded(P),
    encoded(P + 1),
    encoded(2**255 - 1),
    encoded(P + 9, negative_x=True),  # y = 9 + p: y = 9 is no curve point, but the spelling is wrong
]


def test_small_order_and_non_canonical_master_keys_are_422(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        for value in WEAK_MASTER_KEYS:
            refused = [set_master(client, alice, value), reset(client, alice, PASSWORD, value)]
            assert [r.status_code for r in refused] == [422, 422], (value, [r.text for r in refused])
            assert refused[0].json()["errors"][0]["loc"][-1] == "master_key", refused[0].text
        assert identity(client, alice, alice["user_id"]).status_code == 404
        assert set_master(client, alice, public(Ed25519PrivateKey.generate())).status_code == 201


async def test_a_reset_without_a_master_key_sets_the_first_and_tells_nobody(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        group(client, alice, bob)
    master = Ed25519PrivateKey.generate()
    first = public(master)
    async with ws_connect(api, bob) as ws_bob:
        await registered(ws_bob)
        with api.client() as client:
            assert reset(client, alice, "not the password at all", first).status_code == 403
            assert identity(client, bob, alice["user_id"]).status_code == 404
            done = reset(client, alice, PASSWORD, first)
            assert done.status_code == 200, done.text
            assert identity(client, bob, alice["user_id"]).json() == done.json()
            # Nothing changed for bob: no key of alice's was replaced.
            assert await nothing_more(ws_bob, "identity_changed", wait=0.5)
            # A reset to the very key already set is a retry: certificates stay, nobody is told.
            keys = bundle()
            publish(client, alice, keys)
            signature = certificate(master, alice["user_id"], alice["session_id"], keys)
            assert certify(client, alice, alice["session_id"], signature).status_code == 204
            retried = reset(client, alice, PASSWORD, first)
            assert retried.status_code == 200, retried.text
            assert retried.json() == done.json()
            assert certificates(client, bob, alice["user_id"]) == {
                alice["session_id"]: {"signature": signature}
            }
            assert await nothing_more(ws_bob, "identity_changed", wait=0.5)
            # A set key is replaced only by a reset, which bob then hears of.
            second = public(Ed25519PrivateKey.generate())
            assert set_master(client, alice, second).status_code == 409
            assert reset(client, alice, PASSWORD, second).status_code == 200
            changed = await next_frame(ws_bob, "identity_changed")
            assert changed["master_key"] == second


async def test_a_device_whose_certified_keys_change_is_pending_again(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        phone = second_session(client, alice)
        master = Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(master)).status_code == 201
        publish(client, alice, bundle())
        signing = Ed25519PrivateKey.generate()
        keys = keys_with(signing)
        publish(client, phone, keys)
        signature = certificate(master, alice["user_id"], phone["session_id"], keys)
        assert certify(client, alice, phone["session_id"], signature).status_code == 204
    async with ws_connect(api, alice) as ws:
        await registered(ws)
        with api.client() as client:
            # A new signed prekey under the same identity and signing keys needs no approval.
            publish(client, phone, keys_with(signing, keys["identity_key"], prekey_id=2))
            assert await nothing_more(ws, "device_pending", wait=0.5)
            assert certificates(client, alice, alice["user_id"])[phone["session_id"]] is not None
            # A new identity key, a new signing key, or both: pending again, once each time.
            new_signing = Ed25519PrivateKey.generate()
            for changed in (
                keys_with(signing, prekey_id=3),
                keys_with(new_signing, keys["identity_key"], prekey_id=4),
                keys_with(Ed25519PrivateKey.generate(), prekey_id=5),
            ):
                publish(client, phone, changed)
                pending = await next_frame(ws, "device_pending")
                assert pending == {"type": "device_pending", "device_id": phone["session_id"]}
                assert await nothing_more(ws, "device_pending", wait=0.5)
                assert certificates(client, alice, alice["user_id"])[phone["session_id"]] is None


def test_a_certificate_by_the_old_master_key_is_refused_after_a_reset(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        assert set_master(client, alice, public(old)).status_code == 201
        keys = bundle()
        publish(client, alice, keys)
        by_old = certificate(old, alice["user_id"], alice["session_id"], keys)
        assert certify(client, alice, alice["session_id"], by_old).status_code == 204
        assert reset(client, alice, PASSWORD, public(new)).status_code == 200

        refused = certify(client, alice, alice["session_id"], by_old)
        assert refused.status_code == 422, refused.text
        assert certificates(client, alice, alice["user_id"]) == {alice["session_id"]: None}
        by_new = certificate(new, alice["user_id"], alice["session_id"], keys)
        assert certify(client, alice, alice["session_id"], by_new).status_code == 204


async def test_concurrent_first_master_keys_one_is_set_the_other_is_409(api: LiveServer) -> None:
    with api.client() as client:
        users = [user(client) for _ in range(4)]
    async with api.async_client() as client:
        for who in users:
            keys = [public(Ed25519PrivateKey.generate()) for _ in range(2)]
            responses = await asyncio.gather(
                *(client.put("/v1/identity", json={"master_key": k}, headers=bearer(who)) for k in keys)
            )
            assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
            winner = next(r for r in responses if r.status_code == 201).json()["master_key"]
            read = await client.get(f"/v1/users/{who['user_id']}/identity", headers=bearer(who))
            assert read.json()["master_key"] == winner


async def test_a_certificate_racing_a_reset_never_outlives_it(api: LiveServer) -> None:
    """Certificates by the old key keep arriving while the reset runs: each lands before the reset
    (which then drops it) or is refused after it; none is left under the new key."""
    with api.client() as client:
        rounds = [user(client) for _ in range(3)]
        olds = [Ed25519PrivateKey.generate() for _ in rounds]
        signatures = []
        for who, old in zip(rounds, olds, strict=True):
            assert set_master(client, who, public(old)).status_code == 201
            keys = bundle()
            publish(client, who, keys)
            signatures.append(certificate(old, who["user_id"], who["session_id"], keys))
    async with api.async_client() as client:
        for who, signature in zip(rounds, signatures, strict=True):
            url = f"/v1/devices/{who['session_id']}/certificate"
            resetting = asyncio.create_task(
                client.post(
                    "/v1/identity/reset",
                    json={"password": PASSWORD, "master_key": public(Ed25519PrivateKey.generate())},
                    headers=bearer(who),
                )
            )
            statuses: list[int] = []
            while not resetting.done():
                response = await client.put(url, json={"signature": signature}, headers=bearer(who))
                statuses.append(response.status_code)
            assert (await resetting).status_code == 200
            late = await client.put(url, json={"signature": signature}, headers=bearer(who))
            assert late.status_code == 422, late.text
            assert set(statuses) <= {204, 422}, statuses
            listed = await client.get(f"/v1/users/{who['user_id']}/devices", headers=bearer(who))
            assert [item["certificate"] for item in listed.json()["items"]] == [None]
