"""API documentation: `/v1/docs` (Swagger UI from packaged files, nothing from another host), the
OpenAPI document's descriptions and examples, and the AsyncAPI document of the WebSocket protocol.

The AsyncAPI 3.0.0 JSON Schema is kept in tests/support/schemas/ (see its README) so that the
document is validated offline."""

from __future__ import annotations

import copy
import functools
import gzip
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from pydantic import ValidationError

from tests.support.server import LiveServer
from veil.core.web.endpoint import Endpoint
from veil.core.web.openapi import build_openapi
from veil.core.web.ops import OPS_ENDPOINTS
from veil.gateway.app import ALL_MODULES
from veil.realtime import frames
from veil.realtime.asyncapi import build_asyncapi, frame_type

ASYNCAPI_SCHEMA = Path(__file__).resolve().parents[1] / "support" / "schemas" / "asyncapi-3.0.0.json.gz"
ENDPOINTS: list[Endpoint] = [*OPS_ENDPOINTS, *(ep for module in ALL_MODULES for ep in module.endpoints)]
_PATH_PARAM = re.compile(r"{([a-zA-Z_]+)(?::[a-z]+)?}")
# What a page's own files may be, by extension.
_MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


class _References(HTMLParser):
    """Every URL an HTML page makes the browser load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(value for name, value in attrs if name in ("src", "href", "action") and value)


def _same_origin(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and url.startswith("/")


def _csp(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


@functools.cache
def openapi() -> dict[str, Any]:
    return build_openapi(ENDPOINTS, title="Veil", version="1")


def asyncapi_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(gzip.decompress(ASYNCAPI_SCHEMA.read_bytes()))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def test_the_docs_page_and_documents_are_served_from_this_origin_only(api: LiveServer) -> None:
    with api.client() as client:
        page = client.get("/v1/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # The browser is told to load nothing from another host, and nothing inline.
        policy = _csp(page.headers["content-security-policy"])
        assert policy["default-src"] == ["'none'"]
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
        assert policy["connect-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
        assert set(policy["img-src"]) == {"'self'", "data:"}
        # ... and the page and its own script only name this origin.
        parser = _References()
        parser.feed(page.text)
        assert parser.urls, "the page references no assets"
        assert [url for url in parser.urls if not _same_origin(url)] == []
        assets = [url for url in parser.urls if url.startswith("/v1/docs/assets/")]
        assert {Path(url).suffix for url in assets} >= {".css", ".js"}
        for url in assets:
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert asset.headers["content-type"].startswith(_MEDIA_TYPES[Path(url).suffix]), url
            assert asset.content, url
            if url.endswith(".css"):
                # Stylesheet images are data: URIs, never fetched.
                assert all(
                    u.strip("'\"").startswith("data:") for u in re.findall(r"url\(([^)]*)\)", asset.text)
                )
            if url.endswith("init.js"):
                fetched = re.findall(r"fetch\(\"([^\"]+)\"", asset.text)
                assert fetched == ["/v1/openapi.json"]
                assert "validatorUrl: null" in asset.text  # no call to the public validator
        assert client.get("/v1/docs/assets/index.html").status_code == 404  # only the listed files
        # An API response keeps the strict policy: only the docs page relaxes it.
        assert _csp(client.get("/healthz").headers["content-security-policy"])["default-src"] == ["'none'"]

        for link in ("/v1/openapi.json", "/v1/asyncapi.json"):
            document = client.get(link)
            assert document.status_code == 200, link
            assert document.headers["content-type"] == "application/json"
        asyncapi = client.get("/v1/asyncapi.json").json()
    asyncapi_validator().validate(asyncapi)
    assert asyncapi == json.loads(json.dumps(build_asyncapi()))


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", op)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    ]


def _has_example(operation: dict[str, Any]) -> bool:
    if any("example" in param for param in operation.get("parameters", ())):
        return True
    contents = [*operation.get("requestBody", {}).get("content", {}).values()]
    for status, response in operation["responses"].items():
        if status.startswith("2"):
            contents.extend(response.get("content", {}).values())
    return any("example" in content for content in contents)


def _takes_or_returns_anything(operation: dict[str, Any]) -> bool:
    successes = [r for status, r in operation["responses"].items() if status.startswith("2")]
    return bool(
        operation.get("parameters") or operation.get("requestBody") or any("content" in r for r in successes)
    )


def test_every_operation_has_a_description_and_an_example() -> None:
    document = openapi()
    assert document["info"]["description"]
    operations = _operations(document)
    assert len(operations) == len(ENDPOINTS)
    assert [name for name, op in operations if not op.get("description")] == []
    # An operation with no parameters, no body and an empty answer (a logout, deleting one's own
    # backup) has nothing to show.
    missing = [name for name, op in operations if _takes_or_returns_anything(op) and not _has_example(op)]
    assert missing == []
    assert sorted(name for name, op in operations if not _takes_or_returns_anything(op)) == [
        "DELETE /v1/backup",
        "POST /v1/auth/logout",
    ]


def _document_operation(document: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][_PATH_PARAM.sub(r"{\1}", endpoint.path)][
        endpoint.method.lower()
    ]
    return operation


@pytest.mark.parametrize("endpoint", [ep for ep in ENDPOINTS if ep.body is not None], ids=lambda ep: ep.path)
def test_every_request_example_is_accepted_by_its_model(endpoint: Endpoint) -> None:
    """Examples are built from the schemas; one the server would refuse as malformed misleads."""
    document = openapi()
    example = _document_operation(document, endpoint)["requestBody"]["content"]["application/json"]["example"]
    assert endpoint.body is not None
    endpoint.body.model_validate_json(json.dumps(example))


def test_every_response_example_matches_its_model() -> None:
    document = openapi()
    refused = {}
    for endpoint in ENDPOINTS:
        for status, model in endpoint.responses.items():
            if model is None:
                continue
            response = _document_operation(document, endpoint)["responses"][str(status)]
            try:
                model.model_validate_json(json.dumps(response["content"]["application/json"]["example"]))
            except ValidationError as exc:
                refused[f"{endpoint.method} {endpoint.path}"] = exc.errors(include_input=False)
    assert refused == {}


def test_the_asyncapi_document_is_valid_and_lists_every_frame() -> None:
    document = build_asyncapi()
    validator = asyncapi_validator()
    validator.validate(document)
    # The schema does catch a broken document (so the validation above means something).
    broken = copy.deepcopy(document)
    broken["operations"]["send_message"]["action"] = "publish"
    assert not validator.is_valid(broken)

    # Every frame model there is, is published: those the server sends as `send` operations,
    # those it accepts as `receive` operations, each with its payload schema.
    server_frames = set(frames.ServerFrame.__subclasses__())
    assert server_frames == set(frames.SERVER_FRAMES)
    sent = {
        op["messages"][0]["$ref"].rsplit("/", 1)[-1]
        for op in document["operations"].values()
        if op["action"] == "send"
    }
    accepted = {
        op["messages"][0]["$ref"].rsplit("/", 1)[-1]
        for op in document["operations"].values()
        if op["action"] == "receive"
    }
    assert sent == {frame_type(model) for model in server_frames}
    assert sent >= {"message", "device_message", "receipt", "membership", "keys_changed", "device_pending"}
    assert sent >= {"identity_changed", "prekeys_low", "device_gap", "sent", "error"}
    assert accepted == {"ack", "ack_device", "send"}
    schemas = document["components"]["schemas"]
    for name, message in document["components"]["messages"].items():
        model = schemas[message["payload"]["$ref"].rsplit("/", 1)[-1]]
        assert model["properties"]["type"]["const"] == name
