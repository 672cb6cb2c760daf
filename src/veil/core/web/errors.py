"""Every error leaves as a problem document: ours, the framework's 404/405, and backend outages."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from veil.core.logging import get_logger
from veil.core.problems import PROBLEM_CONTENT_TYPE, BackendUnavailable, Problem, unavailable

log = get_logger(__name__)

_FRAMEWORK_DETAILS = {
    404: "No resource at this path.",
    405: "This method is not allowed on this path.",
}


def problem_response(problem: Problem) -> Response:
    return Response(
        orjson.dumps(problem.document()),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


async def handle_problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def handle_http_exception(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = _FRAMEWORK_DETAILS.get(exc.status_code, str(exc.detail))
    return problem_response(Problem(exc.status_code, detail, headers=dict(exc.headers or {})))


async def handle_backend_unavailable(_: Request, exc: Exception) -> Response:
    log.warning("backend_unavailable", reason=str(exc))
    return problem_response(unavailable())


EXCEPTION_HANDLERS = {
    Problem: handle_problem,
    HTTPException: handle_http_exception,
    BackendUnavailable: handle_backend_unavailable,
}
