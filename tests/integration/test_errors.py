"""Problem documents for the framework's own errors and for unhandled exceptions, in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from veil.core.config import Settings
from veil.core.web.app import ServiceModule, create_app
from veil.core.web.endpoint import Endpoint, json_response
from veil.core.wire import RequestModel, ResponseModel

CANARY = "canary-51e0c2aa"


class Echo(RequestModel):
    name: str
    count: int


class EchoReply(ResponseModel):
    name: str


async def crash(_: Request) -> Response:
    raise RuntimeError(f"boom with a secret {CANARY}")


async def echo(_: Request, body: Echo) -> Response:
    return json_response(EchoReply(name=body.name))


TEST_MODULE = ServiceModule(
    "test",
    [
        Endpoint("GET", "/test/crash", crash, "Always fails.", "test", authenticated=False),
        Endpoint(
            "POST",
            "/test/echo",
            echo,
            "Echo.",
            "test",
            body=Echo,
            responses={200: EchoReply},
            authenticated=False,
        ),
    ],
)


@pytest.fixture
def client(settings: Settings, database_url: str) -> Iterator[TestClient]:
    app_settings = settings.model_copy(
        update={"database_url": SecretStr(database_url), "max_request_body_bytes": 1024}
    )
    with TestClient(create_app(app_settings, [TEST_MODULE]), raise_server_exceptions=False) as client:
        yield client


def assert_problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    assert response.headers["strict-transport-security"].startswith("max-age=63072000")  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def test_unhandled_exception_is_a_generic_500(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    body = assert_problem(client.get("/test/crash"), 500)
    assert body["detail"] == "An unexpected error occurred."
    assert CANARY not in str(body)
    assert "Traceback" not in str(body)


def test_unknown_field_and_wrong_type_are_422_without_echoing_input(client: TestClient) -> None:
    body = assert_problem(client.post("/test/echo", json={"name": "x", "count": 1, "is_admin": True}), 422)
    assert body["errors"] == [{"loc": ["is_admin"], "msg": "Extra inputs are not permitted"}]
    body = assert_problem(client.post("/test/echo", json={"name": CANARY, "count": "1"}), 422)
    assert CANARY not in str(body)
    assert body["errors"][0]["loc"] == ["count"]  # type: ignore[index]


def test_malformed_json_is_422(client: TestClient) -> None:
    assert_problem(
        client.post("/test/echo", content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )


def test_non_json_content_type_is_415(client: TestClient) -> None:
    assert_problem(client.post("/test/echo", content=b"name=x", headers={"content-type": "text/plain"}), 415)


def test_oversized_body_is_413(client: TestClient) -> None:
    assert_problem(client.post("/test/echo", json={"name": "x" * 2000, "count": 1}), 413)


def test_404_and_405_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/test/absent"), 404)
    body = assert_problem(client.put("/test/echo"), 405)
    assert body["detail"] == "This method is not allowed on this path."


def test_valid_request_passes(client: TestClient) -> None:
    response = client.post("/test/echo", json={"name": "ok", "count": 2})
    assert response.status_code == 200
    assert response.json() == {"name": "ok"}
