"""Bad query parameters are 422 problem documents on every list, never a 500 with a traceback.

Before: `limit=²` passed `str.isdigit()` and then `int()` raised (a 500, a traceback in the log),
`cursor=¹` on the device queue did the same, and numbers of 4,400+ digits went to `int()`, which
refuses them beyond its digit limit. Each endpoint below is tried with every parameter it declares.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

import httpx
from websockets.exceptions import InvalidStatus

from tests.conftest import ServerFactory
from tests.e2e.test_operator import operator
from tests.support.messaging import envelope, group, send
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register
from tests.support.ws import ws_connect

# The inputs of the report: superscript digits (Unicode digits that `int()` refuses), a number of
# 4,400 digits and one past a bigint, a negative cursor; and a parameter given twice.
BAD_VALUES = ["²", "¹", "٣", "9" * 4400, "9" * 20, "-1", ""]


def _assert_refused(response: httpx.Response, name: str) -> None:
    assert response.status_code == 422, (name, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json")
    document = response.json()
    assert document["status"] == 422
    assert {"loc": ["query", name], "msg": document["errors"][0]["msg"]} in document["errors"]
    assert "Traceback" not in response.text


def _every_bad_input(client: httpx.Client, who: dict[str, Any], path: str) -> list[str]:
    """Try each declared query parameter of `GET path` with each bad value; return their names."""
    document = client.get("/v1/openapi.json").json()
    template = next(p for p in document["paths"] if _matches(p, path))
    names = [p["name"] for p in document["paths"][template]["get"]["parameters"] if p["in"] == "query"]
    assert names, f"{template} declares no query parameters"
    for name in names:
        for value in BAD_VALUES:
            _assert_refused(client.get(path, params={name: value}, headers=bearer(who)), name)
        twice = client.get(f"{path}?{name}=1&{name}=2", headers=bearer(who))
        _assert_refused(twice, name)
    return names


def _matches(template: str, path: str) -> bool:
    parts, wanted = template.split("/"), path.split("/")
    return len(parts) == len(wanted) and all(
        t == w or (t.startswith("{") and t.endswith("}")) for t, w in zip(parts, wanted, strict=True)
    )


def _assert_quiet(server: LiveServer) -> None:
    logs = server.logs()
    assert "Traceback" not in logs
    assert "unhandled_error" not in logs
    assert '"status": 500' not in logs and "status=500" not in logs


def test_lists_refuse_malformed_query_parameters_with_422(
    make_server: ServerFactory, database_url: str
) -> None:
    server = make_server()
    with server.client() as client:
        owner = login(client, register(client))
        admin = operator(client, database_url)
        conversation = group(client, owner)
        cid = conversation["conversation_id"]
        send(client, owner, cid, envelope())

        checked = {
            "/v1/conversations": _every_bad_input(client, owner, "/v1/conversations"),
            f"/v1/conversations/{cid}/messages": _every_bad_input(
                client, owner, f"/v1/conversations/{cid}/messages"
            ),
            "/v1/devices/messages": _every_bad_input(client, owner, "/v1/devices/messages"),
            "/v1/blocks": _every_bad_input(client, owner, "/v1/blocks"),
            "/v1/admin/users": _every_bad_input(client, admin, "/v1/admin/users"),
            "/v1/admin/incidents": _every_bad_input(client, admin, "/v1/admin/incidents"),
            "/v1/admin/audit": _every_bad_input(client, admin, "/v1/admin/audit"),
        }
        assert set(checked[f"/v1/conversations/{cid}/messages"]) == {
            "limit",
            "after_seq",
            "before_seq",
            "cursor",
        }
        assert all({"limit", "cursor"} <= set(names) for names in checked.values())

        # The well-formed forms still work, at their bounds.
        history = f"/v1/conversations/{cid}/messages"
        for params in ({"limit": "200"}, {"after_seq": "0"}, {"before_seq": str(2**63 - 1)}, {"cursor": "0"}):
            assert client.get(history, params=params, headers=bearer(owner)).status_code == 200, params
        page = client.get(history, params={"limit": "1"}, headers=bearer(owner)).json()
        assert [m["seq"] for m in page["items"]] == [1] and page["next_cursor"] == "1"
        assert (
            client.get(
                "/v1/conversations", params={"cursor": str(uuid.uuid4())}, headers=bearer(owner)
            ).status_code
            == 200
        )
        # A parameter the endpoint does not read is ignored, as caches and tools add their own.
        assert client.get("/v1/conversations", params={"_": "²"}, headers=bearer(owner)).status_code == 200
        # Parameters are checked before the conversation is looked up: a stranger gets the same
        # answer for a conversation that exists and for one that does not (no oracle).
        stranger = login(client, register(client))
        refused = client.get(history, params={"limit": "²"}, headers=bearer(stranger))
        missing = client.get(
            f"/v1/conversations/{uuid.uuid4()}/messages", params={"limit": "²"}, headers=bearer(stranger)
        )
        assert refused.status_code == missing.status_code == 422
        assert refused.json() == missing.json()
    _assert_quiet(server)


def test_a_malformed_websocket_ticket_is_a_plain_401(server: LiveServer) -> None:
    async def attempt(ticket: str) -> int:
        try:
            async with ws_connect(server, query=f"?ticket={quote(ticket)}"):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    for ticket in ["²", "9" * 4400, "-1", ""]:
        assert asyncio.run(attempt(ticket)) == 401, ticket
    _assert_quiet(server)
