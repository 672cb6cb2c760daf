"""A Veil server that lies: the real server behind a transport that rewrites what passes through.

`VeilClient(..., transport=LyingServer(ca_file))` talks to the real server, but a test can rewrite the
JSON of chosen requests and responses on the way, by method and path pattern, as whoever runs the
server could: list a member or a device that is not there, hide or invent membership events or
messages, hand out other keys in a claim answer, store a message under another epoch. Only the client
given this transport sees the lies; every other client sees the real server. What the client sent is
recorded, so a test can check that nothing went to a device that should get nothing.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

Edit = Callable[[Any], Any]
# Headers that describe the body as the server sent it, wrong once the body is rewritten.
_BODY_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})


@dataclass(frozen=True, eq=False)
class Rewrite:
    """One lie: `edit` takes the parsed JSON body of every matching exchange and returns the new one."""

    method: str
    path: re.Pattern[str]
    edit: Edit

    def matches(self, request: httpx.Request) -> bool:
        return request.method == self.method and self.path.fullmatch(request.url.path) is not None


@dataclass(frozen=True)
class Sent:
    """A request as the client sent it (before any rewrite), with the real server's status."""

    method: str
    path: str
    body: Any  # the parsed JSON body, or None
    status: int


class LyingServer(httpx.BaseTransport):
    """An httpx transport to the real server (verified against `ca_file`) that rewrites JSON bodies."""

    def __init__(self, ca_file: Path) -> None:
        self._upstream = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(ca_file)))
        self._lock = threading.Lock()
        self._responses: list[Rewrite] = []
        self._requests: list[Rewrite] = []
        self._refusals: list[Rewrite] = []
        self.sent: list[Sent] = []

    # Lies ----------------------------------------------------------------------------------------

    def rewrite(self, method: str, path: str, edit: Edit) -> Rewrite:
        """Pass the JSON of every successful response to `method` on a path matching the regular
        expression `path` (the whole path) through `edit` until `stop` is called."""
        rule = Rewrite(method, re.compile(path), edit)
        with self._lock:
            self._responses.append(rule)
        return rule

    def rewrite_request(self, method: str, path: str, edit: Edit) -> Rewrite:
        """Pass the JSON body of every matching request through `edit` before the real server sees it."""
        rule = Rewrite(method, re.compile(path), edit)
        with self._lock:
            self._requests.append(rule)
        return rule

    def refuse(self, method: str, path: str) -> Rewrite:
        """Answer every matching request 503, as if the server were unavailable, until `stop`."""
        rule = Rewrite(method, re.compile(path), lambda body: body)
        with self._lock:
            self._refusals.append(rule)
        return rule

    def stop(self, rule: Rewrite) -> None:
        """Tell the truth again where `rule` lied."""
        with self._lock:
            for rules in (self._responses, self._requests, self._refusals):
                if rule in rules:
                    rules.remove(rule)

    def tell_the_truth(self) -> None:
        """Stop every lie."""
        with self._lock:
            self._responses.clear()
            self._requests.clear()
            self._refusals.clear()

    # What the client sent -------------------------------------------------------------------------

    def device_messages_sent(self) -> list[tuple[str, str]]:
        """(content_type, recipient device id) of every device message the client posted."""
        return [
            (str(sent.body["content_type"]), str(message["device_id"]))
            for sent in self.sent
            if sent.method == "POST" and sent.path == "/v1/devices/messages" and isinstance(sent.body, dict)
            for message in sent.body.get("messages", [])
        ]

    # Transport ------------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            request_rules = [rule for rule in self._requests if rule.matches(request)]
            response_rules = [rule for rule in self._responses if rule.matches(request)]
            refused = any(rule.matches(request) for rule in self._refusals)
        body = _json(request.read())
        if refused:
            self.sent.append(Sent(request.method, request.url.path, body, 503))
            problem = {
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "Try later.",
            }
            return httpx.Response(503, json=problem, request=request)
        if request_rules:
            edited = body
            for rule in request_rules:
                edited = rule.edit(edited)
            request = httpx.Request(
                request.method,
                request.url,
                headers=[(k, v) for k, v in request.headers.multi_items() if k.lower() not in _BODY_HEADERS],
                content=json.dumps(edited).encode(),
                extensions=request.extensions,
            )
        response = self._upstream.handle_request(request)
        with self._lock:
            self.sent.append(Sent(request.method, request.url.path, body, response.status_code))
        if not response_rules or not 200 <= response.status_code < 300:
            return response
        try:
            answer = _json(response.read())
        finally:
            response.close()
        for rule in response_rules:
            answer = rule.edit(answer)
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
        return httpx.Response(
            response.status_code, headers=headers, content=json.dumps(answer).encode(), request=request
        )

    def close(self) -> None:
        self._upstream.close()


def _json(content: bytes) -> Any:
    return json.loads(content) if content else None
