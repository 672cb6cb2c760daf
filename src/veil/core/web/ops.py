"""Operational endpoints every Veil process serves: liveness, readiness, metrics, API docs."""

from __future__ import annotations

from typing import Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

from veil.core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from veil.core.problems import Problem
from veil.core.resources import Resources
from veil.core.web.docs import docs_page
from veil.core.web.endpoint import Endpoint, json_response, raw_json_response, state_of
from veil.core.wire import ResponseModel

Check = Literal["ok", "unavailable"]


class Health(ResponseModel):
    status: Literal["ok"]


class Readiness(ResponseModel):
    status: Literal["ready"]
    checks: dict[str, Check]


async def healthz(_: Request) -> Response:
    return json_response(Health(status="ok"))


async def livez(request: Request) -> Response:
    return await healthz(request)


async def readyz(request: Request) -> Response:
    resources: Resources = state_of(request, "resources")
    checks = await resources.readiness()
    if any(result != "ok" for result in checks.values()):
        raise Problem(
            503,
            "Not ready: a backing service is unreachable.",
            slug="not-ready",
            headers={"Retry-After": "5"},
            extra={"checks": checks},
        )
    return json_response(Readiness(status="ready", checks=checks))


async def metrics(request: Request) -> Response:
    resources: Resources = state_of(request, "resources")
    return Response(resources.metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def openapi_document(request: Request) -> Response:
    document: bytes = state_of(request, "openapi")
    return raw_json_response(document)


OPS_TAG = "operations"

OPS_ENDPOINTS = (
    Endpoint(
        "GET",
        "/healthz",
        healthz,
        "The process is up.",
        OPS_TAG,
        responses={200: Health},
        authenticated=False,
        touches_backend=False,
    ),
    Endpoint(
        "GET",
        "/livez",
        livez,
        "Alias of /healthz.",
        OPS_TAG,
        responses={200: Health},
        authenticated=False,
        touches_backend=False,
    ),
    Endpoint(
        "GET",
        "/readyz",
        readyz,
        "The database and object store are reachable.",
        OPS_TAG,
        responses={200: Readiness},
        authenticated=False,
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics in text format.",
        OPS_TAG,
        description="Scraped by Prometheus; every family is described in docs/operations.md. The "
        "gateway does not expose it: scrape each process directly.",
        authenticated=False,
        touches_backend=False,
        produces="text/plain",
        response_example='veil_http_requests_total{method="GET",route="/healthz",status="200"} 3.0\n',
    ),
    Endpoint(
        "GET",
        "/v1/openapi.json",
        openapi_document,
        "This OpenAPI 3.1 document.",
        OPS_TAG,
        description="Generated from the same declarations that route and validate requests.",
        authenticated=False,
        touches_backend=False,
        response_example={"openapi": "3.1.0", "info": {"title": "Veil", "version": "1"}, "paths": {}},
    ),
    Endpoint(
        "GET",
        "/v1/docs",
        docs_page,
        "This document rendered for people (Swagger UI).",
        OPS_TAG,
        description="An HTML page whose scripts and styles are served by this API; it loads nothing "
        "from another host.",
        authenticated=False,
        touches_backend=False,
        produces="text/html",
        response_example="<!DOCTYPE html>",
    ),
)


def encode_openapi(document: dict[str, object]) -> bytes:
    return orjson.dumps(document)
