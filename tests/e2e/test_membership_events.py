"""Membership commits and `GET /v1/conversations/{id}/events` (issue 14): every membership or role
change may carry an opaque commit signed by the acting device, stored with the event it causes and
served back in order, so that members can check the chain instead of trusting the server."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.test_query_params import _every_bad_input
from tests.support.messaging import group
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register
from veil.account.store import purge_account

MAX_COMMIT = 16 * 1024


def user(client: httpx.Client) -> dict[str, Any]:
    email = register(client)
    pair = login(client, email)
    pair["email"] = email
    return pair


def commit(size: int = 200) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def events(client: httpx.Client, who: dict[str, Any], cid: str, **params: Any) -> httpx.Response:
    return client.get(f"/v1/conversations/{cid}/events", params=params, headers=bearer(who))


def chain(client: httpx.Client, who: dict[str, Any], cid: str) -> list[dict[str, Any]]:
    response = events(client, who, cid, limit=200)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


def summary(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (e["kind"], e["epoch"], e["actor_id"], e["actor_device_id"], e["subject_id"], e["commit"])
        for e in items
    ]


def create_group(client: httpx.Client, owner: dict[str, Any], **extra: Any) -> str:
    created = client.post("/v1/conversations", json={"type": "group", **extra}, headers=bearer(owner))
    assert created.status_code == 201, created.text
    cid: str = created.json()["conversation_id"]
    return cid


def invite(
    client: httpx.Client, who: dict[str, Any], cid: str, invitee: dict[str, Any], **extra: Any
) -> None:
    response = client.post(
        f"/v1/conversations/{cid}/invitations",
        json={"user_id": invitee["user_id"], **extra},
        headers=bearer(who),
    )
    assert response.status_code == 201, response.text


def delete_member(
    client: httpx.Client, who: dict[str, Any], cid: str, subject: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return client.request(
        "DELETE", f"/v1/conversations/{cid}/members/{subject}", json=body, headers=bearer(who)
    )


def test_each_change_stores_its_commit_and_the_chain_lists_it_in_order(api: LiveServer) -> None:
    with api.client() as client:
        owner, a, b, c = (user(client) for _ in range(4))
        # The owner's second device acts too: the event names the device, not only the user.
        owner_phone = login(client, owner["email"], device_name="phone")
        commits = [commit(size) for size in (1, 64, 300, 1000, 5000, 77, MAX_COMMIT, 512, 2048)]
        uo, ua, ub, uc = owner["user_id"], a["user_id"], b["user_id"], c["user_id"]
        od, pd, ad, bd = owner["session_id"], owner_phone["session_id"], a["session_id"], b["session_id"]

        cid = create_group(client, owner, commit=commits[0])
        invite(client, owner, cid, a, commit=commits[1])
        accepted = client.post(
            f"/v1/conversations/{cid}/invitations/accept", json={"commit": commits[2]}, headers=bearer(a)
        )
        assert accepted.status_code == 204, accepted.text
        invite(client, owner_phone, cid, b, commit=commits[3])
        declined = client.post(
            f"/v1/conversations/{cid}/invitations/decline", json={"commit": commits[4]}, headers=bearer(b)
        )
        assert declined.status_code == 204, declined.text
        invite(client, owner, cid, c, commit=commits[5])
        assert (
            client.post(f"/v1/conversations/{cid}/invitations/accept", headers=bearer(c)).status_code == 204
        )
        role = client.put(
            f"/v1/conversations/{cid}/members/{ua}",
            json={"role": "admin", "commit": commits[6]},
            headers=bearer(owner),
        )
        assert role.status_code == 204, role.text
        removed = delete_member(client, owner_phone, cid, uc, {"commit": commits[7]})
        assert removed.status_code == 204, removed.text
        left = delete_member(client, a, cid, "me", {"commit": commits[8]})
        assert left.status_code == 204, left.text

        assert summary(chain(client, owner, cid)) == [
            ("created", 0, uo, od, uo, commits[0]),
            ("invited", 0, uo, od, ua, commits[1]),
            ("joined", 1, ua, ad, ua, commits[2]),
            ("invited", 1, uo, pd, ub, commits[3]),
            ("declined", 1, ub, bd, ub, commits[4]),
            ("invited", 1, uo, od, uc, commits[5]),
            ("joined", 2, uc, c["session_id"], uc, None),
            ("role_changed", 2, uo, od, ua, commits[6]),
            ("removed", 3, uo, pd, uc, commits[7]),
            ("left", 4, ua, ad, ua, commits[8]),
        ]
        items = chain(client, owner, cid)
        assert [e["event_id"] for e in items] == sorted(e["event_id"] for e in items)
        assert all(e["created_at"].endswith("Z") for e in items)
        conversation = client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()
        assert conversation["epoch"] == items[-1]["epoch"] == 4
        # The bytes come back as they were sent.
        assert base64.b64decode(items[7]["commit"]) == base64.b64decode(commits[6])
        assert len(base64.b64decode(items[7]["commit"])) == MAX_COMMIT


def test_requests_without_a_commit_still_work_and_record_null(api: LiveServer) -> None:
    with api.client() as client:
        owner, a, b, c = (user(client) for _ in range(4))
        cid = group(client, owner, a)["conversation_id"]  # no commit, no body on accept
        invite(client, owner, cid, b)
        # An empty JSON object is the same as no body.
        declined = client.post(f"/v1/conversations/{cid}/invitations/decline", json={}, headers=bearer(b))
        assert declined.status_code == 204, declined.text
        invite(client, owner, cid, c)
        # A JSON content type with no bytes at all is still "no body".
        accepted = client.post(
            f"/v1/conversations/{cid}/invitations/accept",
            headers={**bearer(c), "Content-Type": "application/json"},
        )
        assert accepted.status_code == 204, accepted.text
        assert delete_member(client, owner, cid, c["user_id"]).status_code == 204
        assert delete_member(client, a, cid, "me").status_code == 204
        items = chain(client, owner, cid)
        assert [(e["kind"], e["epoch"]) for e in items] == [
            ("created", 0),
            ("invited", 0),
            ("joined", 1),
            ("invited", 1),
            ("declined", 1),
            ("invited", 1),
            ("joined", 2),
            ("removed", 3),
            ("left", 4),
        ]
        assert all(e["commit"] is None for e in items)


BAD_COMMITS = {
    "oversize": commit(MAX_COMMIT + 1),
    "not base64": "this is not base64!",
    "not canonical": "QQ",  # no padding
    "empty": "",
    "not a string": 12,
}


@pytest.mark.parametrize("bad", list(BAD_COMMITS), ids=list(BAD_COMMITS))
def test_a_bad_commit_is_refused_and_changes_nothing(api: LiveServer, bad: str) -> None:
    value = BAD_COMMITS[bad]
    with api.client() as client:
        owner, a, b, invitee = (user(client) for _ in range(4))
        cid = group(client, owner, a, b)["conversation_id"]
        invite(client, owner, cid, invitee)
        before_events = chain(client, owner, cid)
        before = client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()
        groups_before = client.get("/v1/conversations", headers=bearer(owner)).json()["items"]
        stranger = user(client)

        refused = [
            client.post("/v1/conversations", json={"type": "group", "commit": value}, headers=bearer(owner)),
            client.post(
                f"/v1/conversations/{cid}/invitations",
                json={"user_id": stranger["user_id"], "commit": value},
                headers=bearer(owner),
            ),
            client.post(
                f"/v1/conversations/{cid}/invitations/accept", json={"commit": value}, headers=bearer(invitee)
            ),
            client.post(
                f"/v1/conversations/{cid}/invitations/decline",
                json={"commit": value},
                headers=bearer(invitee),
            ),
            client.put(
                f"/v1/conversations/{cid}/members/{a['user_id']}",
                json={"role": "admin", "commit": value},
                headers=bearer(owner),
            ),
            delete_member(client, owner, cid, b["user_id"], {"commit": value}),
            delete_member(client, a, cid, "me", {"commit": value}),
        ]
        for response in refused:
            assert response.status_code == 422, (response.request.method, response.request.url, response.text)
            problem = response.json()
            assert problem["status"] == 422 and problem["errors"]
            assert response.headers["content-type"].startswith("application/problem+json")

        assert chain(client, owner, cid) == before_events
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json() == before
        assert client.get("/v1/conversations", headers=bearer(owner)).json()["items"] == groups_before
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(stranger)).status_code == 404


def test_a_body_that_is_not_json_is_refused(api: LiveServer) -> None:
    with api.client() as client:
        owner, invitee = user(client), user(client)
        cid = create_group(client, owner)
        invite(client, owner, cid, invitee)
        response = client.post(
            f"/v1/conversations/{cid}/invitations/accept",
            content=b"commit=abc",
            headers={**bearer(invitee), "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 415
        unknown = client.post(
            f"/v1/conversations/{cid}/invitations/accept", json={"plaintext": "hi"}, headers=bearer(invitee)
        )
        assert unknown.status_code == 422
        assert [
            m["state"]
            for m in client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["members"]
        ] == ["joined", "invited"]


def test_only_members_and_invitees_read_the_events(api: LiveServer) -> None:
    with api.client() as client:
        owner, member, invitee, stranger, leaver = (user(client) for _ in range(5))
        cid = group(client, owner, member, leaver)["conversation_id"]
        invite(client, owner, cid, invitee)
        assert delete_member(client, leaver, cid, "me").status_code == 204

        assert events(client, member, cid).status_code == 200
        # An invitee checks the chain before accepting.
        seen = events(client, invitee, cid)
        assert seen.status_code == 200
        assert seen.json()["items"][-1]["kind"] == "left"

        missing = events(client, stranger, cid=str(uuid.uuid4()))
        assert missing.status_code == 404
        for outsider in (stranger, leaver):
            hidden = events(client, outsider, cid)
            assert hidden.status_code == 404
            assert hidden.json() == missing.json()
        assert client.get(f"/v1/conversations/{cid}/events").status_code == 401
        assert events(client, owner, "not-a-uuid").status_code == 404


def test_events_paginate_with_limit_and_cursor(api: LiveServer) -> None:
    with api.client() as client:
        owner = user(client)
        invitees = [user(client) for _ in range(6)]
        cid = create_group(client, owner)
        for invitee in invitees:
            invite(client, owner, cid, invitee, commit=commit())
        full = chain(client, owner, cid)
        assert len(full) == 7

        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor is not None:
                params["cursor"] = cursor
            response = events(client, owner, cid, **params)
            assert response.status_code == 200, response.text
            page = response.json()
            pages.append(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [3, 3, 1]
        assert [e for p in pages for e in p] == full
        assert [e["subject_id"] for e in full[1:]] == [i["user_id"] for i in invitees]

        for bad in ({"limit": 0}, {"limit": 201}, {"cursor": "abc"}):
            assert events(client, owner, cid, **bad).status_code == 422, bad
        # Declared in the OpenAPI document, and every malformed value is a 422 naming it.
        assert set(_every_bad_input(client, owner, f"/v1/conversations/{cid}/events")) == {"limit", "cursor"}
        # A cursor past the end is an empty last page.
        beyond = events(client, owner, cid, cursor=full[-1]["event_id"]).json()
        assert beyond == {"items": [], "next_cursor": None}


def test_delete_with_a_commit_for_leave_and_removal_and_the_heir(api: LiveServer) -> None:
    with api.client() as client:
        owner, a, b = (user(client) for _ in range(3))
        cid = group(client, owner, a, b)["conversation_id"]
        removal, leave = commit(), commit()
        assert delete_member(client, owner, cid, b["user_id"], {"commit": removal}).status_code == 204
        # The last owner leaves: the remaining member becomes owner, recorded as its own event.
        assert delete_member(client, owner, cid, "me", {"commit": leave}).status_code == 204
        items = chain(client, a, cid)
        assert summary(items[-3:]) == [
            ("removed", 3, owner["user_id"], owner["session_id"], b["user_id"], removal),
            ("left", 4, owner["user_id"], owner["session_id"], owner["user_id"], leave),
            ("role_changed", 4, owner["user_id"], owner["session_id"], a["user_id"], None),
        ]
        members = client.get(f"/v1/conversations/{cid}", headers=bearer(a)).json()["members"]
        assert [(m["user_id"], m["role"]) for m in members] == [(a["user_id"], "owner")]
        # A refused role change (nobody changes an owner's role, their own included) records nothing.
        refused = client.put(
            f"/v1/conversations/{cid}/members/{a['user_id']}",
            json={"role": "member", "commit": commit()},
            headers=bearer(a),
        )
        assert refused.status_code == 403
        assert chain(client, a, cid) == items


def test_same_role_again_records_no_event(api: LiveServer) -> None:
    with api.client() as client:
        owner, a = user(client), user(client)
        cid = group(client, owner, a)["conversation_id"]
        path = f"/v1/conversations/{cid}/members/{a['user_id']}"
        assert client.put(path, json={"role": "admin"}, headers=bearer(owner)).status_code == 204
        assert client.put(path, json={"role": "admin"}, headers=bearer(owner)).status_code == 204
        assert client.put(path, json={"role": "member"}, headers=bearer(owner)).status_code == 204
        kinds = [e["kind"] for e in chain(client, owner, cid)]
        assert kinds == ["created", "invited", "joined", "role_changed", "role_changed"]


def test_a_direct_conversation_takes_no_commit_and_lists_its_events(api: LiveServer) -> None:
    with api.client() as client:
        a, b = user(client), user(client)
        refused = client.post(
            "/v1/conversations",
            json={"type": "direct", "member_id": b["user_id"], "commit": commit()},
            headers=bearer(a),
        )
        assert refused.status_code == 422
        assert client.get("/v1/conversations", headers=bearer(a)).json()["items"] == []
        created = client.post(
            "/v1/conversations", json={"type": "direct", "member_id": b["user_id"]}, headers=bearer(a)
        )
        assert created.status_code == 201
        cid = created.json()["conversation_id"]
        assert delete_member(client, b, cid, "me").status_code == 204
        back = client.post(
            "/v1/conversations", json={"type": "direct", "member_id": a["user_id"]}, headers=bearer(b)
        )
        assert back.status_code == 200
        assert summary(chain(client, b, cid)) == [
            ("created", 0, a["user_id"], a["session_id"], b["user_id"], None),
            ("left", 1, b["user_id"], b["session_id"], b["user_id"], None),
            ("joined", 2, b["user_id"], b["session_id"], b["user_id"], None),
        ]


async def test_the_purge_clears_the_actor_its_device_and_its_commits(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    with api.client() as client:
        owner, a, b = (user(client) for _ in range(3))
        cid = create_group(client, owner, commit=commit())
        for member in (a, b):
            invite(client, owner, cid, member, commit=commit())
            client.post(
                f"/v1/conversations/{cid}/invitations/accept",
                json={"commit": commit()},
                headers=bearer(member),
            )
        assert delete_member(client, owner, cid, "me", {"commit": commit()}).status_code == 204

    async with db.transaction():
        await purge_account(db, uuid.UUID(owner["user_id"]), [])  # type: ignore[arg-type]
    rows = await db.fetch(
        "SELECT kind, actor_id, actor_device_id, subject_id, commit FROM membership_events "
        "WHERE conversation_id = $1::uuid ORDER BY id",
        cid,
    )
    owner_id, device = uuid.UUID(owner["user_id"]), uuid.UUID(owner["session_id"])
    assert rows, "the others' events stay"
    assert all(owner_id not in (r["actor_id"], r["subject_id"]) for r in rows)
    assert all(r["actor_device_id"] != device for r in rows)
    # The owner's own actions stay as facts, without who made them or what they signed.
    invited = [r for r in rows if r["kind"] == "invited"]
    assert len(invited) == 2
    assert all(
        r["actor_id"] is None and r["actor_device_id"] is None and r["commit"] is None for r in invited
    )
    # The members' own commits are theirs and stay.
    joined = [r for r in rows if r["kind"] == "joined"]
    assert len(joined) == 2 and all(r["commit"] is not None and r["actor_device_id"] for r in joined)


# Ordering commits (ADR 0017): a commit-bearing request may name the event it was built on, and
# the server records it only if that is still the conversation's latest event.


def latest_event_id(client: httpx.Client, who: dict[str, Any], cid: str) -> int:
    event_id: int = chain(client, who, cid)[-1]["event_id"]
    return event_id


def state(client: httpx.Client, who: dict[str, Any], cid: str) -> tuple[Any, Any]:
    """Everything a refused request must leave as it was: the chain and the roster."""
    conversation = client.get(f"/v1/conversations/{cid}", headers=bearer(who))
    assert conversation.status_code == 200, conversation.text
    return chain(client, who, cid), conversation.json()


def assert_stale(response: httpx.Response, last_event_id: int) -> None:
    assert response.status_code == 409, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["last_event_id"] == last_event_id
    assert "fetch the new events" in problem["detail"] and "rebuild the commit" in problem["detail"]


def test_each_change_built_on_a_stale_event_is_refused_and_on_the_latest_recorded(api: LiveServer) -> None:
    with api.client() as client:
        owner, a, b, c = (user(client) for _ in range(4))
        cid = create_group(client, owner, commit=commit())
        path = f"/v1/conversations/{cid}"

        def built_on(
            stale: int, who: dict[str, Any], request: Callable[[int], httpx.Response]
        ) -> httpx.Response:
            """Send `request(after_event_id)` on `stale` (a 409 that changes nothing), then on the
            latest event, and answer the second response."""
            before = state(client, owner, cid)
            latest = before[0][-1]["event_id"]
            assert stale != latest
            assert_stale(request(stale), latest)
            assert state(client, owner, cid) == before
            # The caller can read the events; what it rebuilds on is what the 409 named.
            assert latest_event_id(client, who, cid) == latest
            return request(latest)

        first = latest_event_id(client, owner, cid)
        invite(client, owner, cid, a, commit=commit(), after_event_id=first)

        def invite_b(after: int) -> httpx.Response:
            return client.post(
                f"{path}/invitations",
                json={"user_id": b["user_id"], "commit": commit(), "after_event_id": after},
                headers=bearer(owner),
            )

        # No event, and one the conversation never reached, are as stale as an older one.
        for never in (0, first + 10_000):
            assert_stale(invite_b(never), latest_event_id(client, owner, cid))
        invited = built_on(first, owner, invite_b)
        assert invited.status_code == 201, invited.text

        accept_commit = commit()
        accepted = built_on(
            first,
            a,
            lambda after: client.post(
                f"{path}/invitations/accept",
                json={"commit": accept_commit, "after_event_id": after},
                headers=bearer(a),
            ),
        )
        assert accepted.status_code == 204, accepted.text
        declined = built_on(
            first,
            b,
            lambda after: client.post(
                f"{path}/invitations/decline",
                json={"commit": commit(), "after_event_id": after},
                headers=bearer(b),
            ),
        )
        assert declined.status_code == 204, declined.text
        role = built_on(
            first,
            owner,
            lambda after: client.put(
                f"{path}/members/{a['user_id']}",
                json={"role": "admin", "commit": commit(), "after_event_id": after},
                headers=bearer(owner),
            ),
        )
        assert role.status_code == 204, role.text
        invite(client, a, cid, c, commit=commit(), after_event_id=latest_event_id(client, a, cid))
        stale = latest_event_id(client, owner, cid)
        assert client.post(f"{path}/invitations/accept", headers=bearer(c)).status_code == 204
        removed = built_on(
            stale,
            owner,
            lambda after: delete_member(
                client, owner, cid, c["user_id"], {"commit": commit(), "after_event_id": after}
            ),
        )
        assert removed.status_code == 204, removed.text
        left = built_on(
            stale,
            a,
            lambda after: delete_member(client, a, cid, "me", {"commit": commit(), "after_event_id": after}),
        )
        assert left.status_code == 204, left.text

        items = chain(client, owner, cid)
        assert [(e["kind"], e["subject_id"]) for e in items] == [
            ("created", owner["user_id"]),
            ("invited", a["user_id"]),
            ("invited", b["user_id"]),
            ("joined", a["user_id"]),
            ("declined", b["user_id"]),
            ("role_changed", a["user_id"]),
            ("invited", c["user_id"]),
            ("joined", c["user_id"]),
            ("removed", c["user_id"]),
            ("left", a["user_id"]),
        ]
        assert base64.b64decode(items[3]["commit"]) == base64.b64decode(accept_commit)
        members = client.get(path, headers=bearer(owner)).json()["members"]
        assert [m["user_id"] for m in members] == [owner["user_id"]]


def test_a_stale_after_event_id_tells_an_outsider_nothing(api: LiveServer) -> None:
    with api.client() as client:
        owner, member, stranger = (user(client) for _ in range(3))
        cid = group(client, owner, member)["conversation_id"]
        missing = delete_member(
            client, stranger, str(uuid.uuid4()), member["user_id"], {"commit": commit(), "after_event_id": 1}
        )
        assert missing.status_code == 404
        for request in (
            client.post(
                f"/v1/conversations/{cid}/invitations",
                json={"user_id": stranger["user_id"], "commit": commit(), "after_event_id": 1},
                headers=bearer(stranger),
            ),
            client.post(
                f"/v1/conversations/{cid}/invitations/accept",
                json={"commit": commit(), "after_event_id": 1},
                headers=bearer(stranger),
            ),
            delete_member(
                client, stranger, cid, member["user_id"], {"commit": commit(), "after_event_id": 1}
            ),
        ):
            assert request.status_code == 404
            assert request.json() == missing.json()


async def test_commits_built_on_the_same_event_at_once_exactly_one_is_recorded(api: LiveServer) -> None:
    with api.client() as client:
        owner, admin, leaver = (user(client) for _ in range(3))
        invitees = [user(client) for _ in range(4)]
        cid = group(client, owner, admin, leaver)["conversation_id"]
        path = f"/v1/conversations/{cid}"
        assert (
            client.put(
                f"{path}/members/{admin['user_id']}", json={"role": "admin"}, headers=bearer(owner)
            ).status_code
            == 204
        )
        base = latest_event_id(client, owner, cid)

    async with api.async_client() as racing:
        # The owner and an admin invite four people at once, all on the same predecessor, while
        # the admin also removes a member on it: a forked chain if more than one lands.
        requests = [
            racing.post(
                f"{path}/invitations",
                json={"user_id": invitee["user_id"], "commit": commit(), "after_event_id": base},
                headers=bearer(owner if n % 2 else admin),
            )
            for n, invitee in enumerate(invitees)
        ]
        requests.append(
            racing.request(
                "DELETE",
                f"{path}/members/{leaver['user_id']}",
                json={"commit": commit(), "after_event_id": base},
                headers=bearer(admin),
            )
        )
        responses = await asyncio.gather(*requests)

    with api.client() as client:
        won = [r for r in responses if r.status_code in (201, 204)]
        lost = [r for r in responses if r.status_code == 409]
        assert len(won) == 1 and len(lost) == len(responses) - 1, [r.status_code for r in responses]
        items = chain(client, owner, cid)
        after = [e for e in items if e["event_id"] > base]
        assert len(after) == 1, after
        for response in lost:
            assert_stale(response, after[0]["event_id"])
        # A loser rebuilds on the event it was told of, and lands.
        rebuilt = next(invitee for invitee in invitees if invitee["user_id"] != after[0]["subject_id"])
        invite(client, owner, cid, rebuilt, commit=commit(), after_event_id=after[0]["event_id"])
        assert chain(client, owner, cid)[-1]["subject_id"] == rebuilt["user_id"]


AFTER_EVENT_ID_REFUSED = {
    "without a commit": {},
    "with a null commit": {"commit": None},
    "negative": {"commit": commit()},
    "a string": {"commit": commit()},
    "a float": {"commit": commit()},
    "a whole float": {"commit": commit()},
    "a boolean": {"commit": commit()},
    "beyond bigint": {"commit": commit()},
}
AFTER_EVENT_ID_VALUES: dict[str, Any] = {
    "without a commit": 1,
    "with a null commit": 1,
    "negative": -1,
    "a string": "1",
    "a float": 1.5,
    "a whole float": 1.0,
    "a boolean": True,
    "beyond bigint": 2**63,
}


@pytest.mark.parametrize("case", list(AFTER_EVENT_ID_REFUSED), ids=list(AFTER_EVENT_ID_REFUSED))
def test_a_bad_after_event_id_is_a_422_that_changes_nothing(api: LiveServer, case: str) -> None:
    with api.client() as client:
        owner, a, b, invitee, stranger = (user(client) for _ in range(5))
        cid = group(client, owner, a, b)["conversation_id"]
        invite(client, owner, cid, invitee)
        before = state(client, owner, cid)
        latest = before[0][-1]["event_id"]
        # The right event id where a number is wanted, so only the flaw named by `case` is wrong.
        value = AFTER_EVENT_ID_VALUES[case]
        if case in ("without a commit", "with a null commit"):
            value = latest
        extra = {**AFTER_EVENT_ID_REFUSED[case], "after_event_id": value}
        path = f"/v1/conversations/{cid}"
        refused = [
            client.post(
                f"{path}/invitations", json={"user_id": stranger["user_id"], **extra}, headers=bearer(owner)
            ),
            client.post(f"{path}/invitations/accept", json=extra, headers=bearer(invitee)),
            client.post(f"{path}/invitations/decline", json=extra, headers=bearer(invitee)),
            client.put(
                f"{path}/members/{a['user_id']}", json={"role": "admin", **extra}, headers=bearer(owner)
            ),
            delete_member(client, owner, cid, b["user_id"], extra),
            delete_member(client, a, cid, "me", extra),
        ]
        for response in refused:
            assert response.status_code == 422, (response.request.method, response.request.url, response.text)
            problem = response.json()
            assert ["after_event_id"] in [e["loc"] for e in problem["errors"]], problem
            assert "last_event_id" not in problem
        assert state(client, owner, cid) == before


def test_a_group_is_created_without_after_event_id(api: LiveServer) -> None:
    with api.client() as client:
        owner = user(client)
        refused = client.post(
            "/v1/conversations",
            json={"type": "group", "commit": commit(), "after_event_id": 0},
            headers=bearer(owner),
        )
        assert refused.status_code == 422
        assert client.get("/v1/conversations", headers=bearer(owner)).json()["items"] == []


def test_after_event_id_is_published_for_every_change_but_creation(api: LiveServer) -> None:
    with api.client() as client:
        document = client.get("/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    changes = {
        ("post", "/v1/conversations/{conversation_id}/invitations"),
        ("post", "/v1/conversations/{conversation_id}/invitations/accept"),
        ("post", "/v1/conversations/{conversation_id}/invitations/decline"),
        ("put", "/v1/conversations/{conversation_id}/members/{user_id}"),
        ("delete", "/v1/conversations/{conversation_id}/members/{user_id}"),
    }
    for method, path in changes:
        operation = document["paths"][path][method]
        assert "after_event_id" in operation["summary"] and "last_event_id" in operation["summary"]
        assert "409" in operation["responses"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert {"type": "integer", "minimum": 0, "maximum": 2**63 - 1} in schema["properties"][
            "after_event_id"
        ]["anyOf"]
        assert schema["dependentSchemas"]["after_event_id"]["required"] == ["commit"]
    assert "after_event_id" not in schemas["CreateGroup"]["properties"]
