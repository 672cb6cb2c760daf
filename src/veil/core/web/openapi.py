"""The OpenAPI 3.1 document, generated from the endpoint declarations and their pydantic models.

Every operation gets a description (its own, plus who may call it and whether it is rate limited)
and an example: of its request body, of its success response, and of each parameter
(`veil.core.web.examples`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from veil.core.web.endpoint import Endpoint
from veil.core.web.examples import EXAMPLE_UUID, example_of

_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-z]+))?}")
_REF = "#/components/schemas/{model}"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
}

_ERROR_DESCRIPTIONS = {
    400: "Bad request.",
    401: "Missing, invalid or expired credentials.",
    403: "Not allowed for the caller's role.",
    404: "Not found, or not visible to the caller.",
    409: "Conflicts with the current state.",
    413: "The body or a declared size is too large.",
    415: "The body is not JSON.",
    422: "The body or a query parameter does not match the schema.",
    429: "Rate limited; see Retry-After.",
    503: "A backing service is unavailable.",
}


DESCRIPTION = """\
Veil's HTTP API: accounts and sessions, device keys, end-to-end encrypted conversations,
attachments, and the operator's tools. The server stores and forwards ciphertext only.

Authenticate with `Authorization: Bearer <access token>` from `POST /v1/auth/login` (15 minutes;
renew it with `POST /v1/auth/refresh`). Request bodies are JSON and strict: an unknown field, a
wrong type or bad base64 is a 422. Every error is an RFC 9457 problem document
(`application/problem+json`). Lists take `?limit=` (1 to 200, default 50) and `?cursor=` (the
previous page's `next_cursor`).

The WebSocket protocol (`GET /v1/ws`) is described by the AsyncAPI document
[/v1/asyncapi.json](/v1/asyncapi.json); this document is [/v1/openapi.json](/v1/openapi.json)."""


def _parameters(path: str) -> list[dict[str, Any]]:
    params = []
    for name, convertor in _PATH_PARAM.findall(path):
        schema: dict[str, Any] = {"type": "string"}
        example: Any = "example"
        if convertor == "int":
            schema = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
            example = 1
        elif convertor == "uuid" or name.endswith("_id") or name == "id":
            schema = {"type": "string", "format": "uuid"}
            example = EXAMPLE_UUID
        params.append({"name": name, "in": "path", "required": True, "schema": schema, "example": example})
    return params


def _description(ep: Endpoint) -> str:
    facts = [ep.description] if ep.description else []
    facts.append("Needs a bearer access token." if ep.authenticated else "Needs no credentials.")
    if ep.rate_limited:
        facts.append("Rate limited: over the budget it answers 429 with `Retry-After`.")
    return "\n\n".join(facts)


def _openapi_path(path: str) -> str:
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def build_openapi(endpoints: Sequence[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for ep in endpoints:
        if ep.body is not None:
            wanted.append((ep.body, "validation"))
        wanted.extend((model, "serialization") for model in ep.responses.values() if model is not None)
    unique = list(dict.fromkeys(wanted))
    refs, schema_doc = models_json_schema(unique, ref_template=_REF) if unique else ({}, {})
    components: dict[str, Any] = dict(schema_doc.get("$defs", {}))
    components["Problem"] = PROBLEM_SCHEMA

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        operation: dict[str, Any] = {
            "operationId": ep.handler.__name__,
            "summary": ep.summary,
            "description": _description(ep),
            "tags": [ep.tag],
            "responses": {},
        }
        params = _parameters(ep.path) + [
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "description": param.description,
                "schema": param.schema(),
                "example": example_of(param.schema(), components),
            }
            for param in ep.query
        ]
        if params:
            operation["parameters"] = params
        if ep.authenticated:
            operation["security"] = [{"bearerAuth": []}]
        if ep.body is not None:
            schema = refs[(ep.body, "validation")]
            example = ep.example if ep.example is not None else example_of(schema, components)
            operation["requestBody"] = {
                "required": ep.body_required,
                "content": {"application/json": {"schema": schema, "example": example}},
            }
        for status, model in ep.responses.items():
            response: dict[str, Any] = {"description": "Success."}
            if model is not None:
                schema = refs[(model, "serialization")]
                response["content"] = {
                    "application/json": {"schema": schema, "example": example_of(schema, components)}
                }
            elif ep.response_example is not None:
                kind = "object" if ep.produces == "application/json" else "string"
                response["content"] = {
                    ep.produces: {"schema": {"type": kind}, "example": ep.response_example}
                }
            operation["responses"][str(status)] = response
        for status in ep.documented_errors():
            operation["responses"][str(status)] = {
                "description": _ERROR_DESCRIPTIONS.get(status, "Error."),
                "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}},
            }
        paths.setdefault(_openapi_path(ep.path), {})[ep.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
