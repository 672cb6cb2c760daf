"""Query parameters: strict parsing, and one declaration for the parser and the OpenAPI document."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from veil.core.problems import Problem
from veil.core.web.endpoint import Endpoint
from veil.core.web.openapi import build_openapi
from veil.core.web.ops import OPS_ENDPOINTS
from veil.core.web.params import ID_CURSOR, LIMIT, MAX_BIGINT, IntQuery, parse_query, parse_uuid
from veil.gateway.app import ALL_MODULES

SRC = Path(__file__).resolve().parents[2] / "src" / "veil"
CURSOR = IntQuery("cursor", 0, MAX_BIGINT, None, "A cursor.")
ENDPOINTS: list[Endpoint] = [*OPS_ENDPOINTS, *(ep for module in ALL_MODULES for ep in module.endpoints)]

# What each was found to do before: a 500 with a traceback (int() refuses Unicode digits that
# str.isdigit() accepts), quadratic int() on huge numbers, or silently accepted.
BAD_INTEGERS = [
    "",
    "²",
    "¹",
    "٣",  # Arabic-Indic three: int() accepts it
    "-1",
    "+1",
    " 1",
    "1 ",
    "1\n",
    "1_000",
    "0x10",
    "1.0",
    "1e3",
    "9" * 20,
    "9" * 4400,
    str(MAX_BIGINT + 1),
]


def _request(query: str) -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": []}
    )


def _errors(query: str, *params: Any) -> list[dict[str, Any]]:
    with pytest.raises(Problem) as caught:
        parse_query(_request(query), params)
    assert caught.value.status == 422
    errors: list[dict[str, Any]] = caught.value.document()["errors"]
    return errors


@pytest.mark.parametrize("raw", BAD_INTEGERS)
def test_malformed_integers_are_refused_naming_the_parameter(raw: str) -> None:
    with pytest.raises(ValueError, match="Must be an integer from 0 to"):
        CURSOR.parse(raw)


def test_integers_within_bounds_are_accepted_and_outside_refused() -> None:
    assert CURSOR.parse("0") == 0
    assert CURSOR.parse(str(MAX_BIGINT)) == MAX_BIGINT
    assert LIMIT.parse("007") == 7
    for raw in ("0", "201"):
        with pytest.raises(ValueError, match="from 1 to 200"):
            LIMIT.parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "¹",
        "not-a-uuid",
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "12345678123456781234567812345678",
        "٣" * 8 + "-1234-5678-1234-567812345678",
        "12345678-1234-5678-1234-567812345678\n",
    ],
)
def test_only_canonical_uuids_are_accepted(raw: str) -> None:
    assert parse_uuid(raw) is None
    with pytest.raises(ValueError, match="Not a cursor"):
        ID_CURSOR.parse(raw)


def test_a_canonical_uuid_in_either_case_is_accepted() -> None:
    value = uuid.uuid4()
    assert parse_uuid(str(value)) == value
    assert parse_uuid(str(value).upper()) == value


def test_every_bad_parameter_is_listed_and_absent_ones_take_their_default() -> None:
    assert parse_query(_request(""), (LIMIT, ID_CURSOR)) == {"limit": 50, "cursor": None}
    assert _errors("limit=%C2%B2&cursor=%C2%B9", LIMIT, ID_CURSOR) == [
        {"loc": ["query", "limit"], "msg": "Must be an integer from 1 to 200."},
        {"loc": ["query", "cursor"], "msg": "Not a cursor from this API."},
    ]


def test_a_parameter_given_twice_is_refused() -> None:
    assert _errors("limit=1&limit=2", LIMIT) == [
        {"loc": ["query", "limit"], "msg": "Give this parameter at most once."}
    ]


def test_reading_an_undeclared_parameter_is_a_programming_error() -> None:
    request = _request("limit=5")
    request.state.query = parse_query(request, (ID_CURSOR,))
    with pytest.raises(LookupError, match="limit"):
        LIMIT(request)


def test_every_list_declares_limit_and_cursor_and_the_document_publishes_them() -> None:
    document = build_openapi(ENDPOINTS, title="Veil", version="1")
    lists = 0
    for ep in ENDPOINTS:
        names = [param.name for param in ep.query]
        assert len(names) == len(set(names)), ep.path
        models = [m for m in ep.responses.values() if m is not None]
        if any("next_cursor" in m.model_fields for m in models):
            lists += 1
            assert {"limit", "cursor"} <= set(names), f"{ep.method} {ep.path} lists without declaring them"
        path = ep.path.replace(":int", "")
        published = document["paths"][path][ep.method.lower()].get("parameters", [])
        in_query = {p["name"]: p for p in published if p["in"] == "query"}
        assert set(in_query) == set(names), ep.path
        for param in ep.query:
            assert in_query[param.name]["schema"] == param.schema()
            assert in_query[param.name]["description"]
        if ep.query:
            assert "422" in document["paths"][path][ep.method.lower()]["responses"]
    assert lists >= 5


def test_no_route_reads_the_query_string_around_the_declarations() -> None:
    # The WebSocket handshake is not an OpenAPI operation; its `?ticket=` is documented with it.
    allowed = {SRC / "realtime" / "api.py"}
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "client" not in path.parts
        and path not in allowed
        and "query_params" in path.read_text()
        and path.name != "params.py"
    ]
    assert offenders == []
