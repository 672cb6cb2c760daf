"""Presigned object-store URLs live at most 300 s (a URL is a bearer credential that leaks with
logs, proxies and browser history). Before, uploads carried `X-Amz-Expires=900` and export
downloads 899 s. An export archive still stays downloadable as long as before: each status request
presigns a fresh short URL for it."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import ServerFactory
from tests.e2e.test_account import ask, confirm, user
from tests.support.files import direct, put_to_store, reserve
from tests.support.mail import latest_code, messages_to
from tests.support.users import bearer
from veil.core.config import Settings

LIMIT = 300


def lifetime(url: str) -> int:
    """The lifetime the store will enforce: the signed `X-Amz-Expires` of a SigV4 query string."""
    [expires] = parse_qs(urlsplit(url).query)["X-Amz-Expires"]
    return int(expires)


def assert_short(grant: dict[str, Any]) -> None:
    assert 0 < lifetime(grant["url"]) <= LIMIT, grant["url"]
    left = datetime.fromisoformat(grant["expires_at"]) - datetime.now(UTC)
    assert timedelta(0) < left <= timedelta(seconds=LIMIT)


def confirmed_export(
    client: httpx.Client, settings: Settings, who: dict[str, Any]
) -> tuple[str, httpx.Response]:
    """Ask for an export and confirm it with the code it mailed (after the sign-up mail)."""
    before = len(messages_to(settings, who["email"]))
    request_id: str = ask(client, who, type="export").json()["request_id"]
    code = latest_code(settings, who["email"], count=before + 1)
    return request_id, confirm(client, who, request_id, code)


def test_attachment_upload_and_download_urls_live_at_most_300_s(make_server: ServerFactory) -> None:
    server = make_server()
    body = os.urandom(1000)
    with server.client() as client:
        alice, bob = user(client), user(client)
        reserved = reserve(client, alice, direct(client, alice, bob), body)
        assert reserved.status_code == 201, reserved.text
        grant = reserved.json()["upload"]
        assert lifetime(grant["url"]) == LIMIT  # the default is the bar itself
        assert_short(grant)
        assert put_to_store(grant, body).status_code == 200
        attachment_id = reserved.json()["attachment_id"]
        completed = client.post(f"/v1/attachments/{attachment_id}/complete", headers=bearer(alice))
        assert completed.status_code == 200
        got = client.get(f"/v1/attachments/{attachment_id}", headers=bearer(bob))
        assert_short(got.json()["download"])


def test_export_urls_are_short_but_the_archive_stays_for_fresh_ones(
    make_server: ServerFactory, settings: Settings
) -> None:
    server = make_server()
    with server.client() as client:
        alice = user(client)
        request_id, done = confirmed_export(client, settings, alice)
        assert done.status_code == 200, done.text
        assert_short(done.json()["download"])
        status = client.get(f"/v1/account/requests/{request_id}", headers=bearer(alice)).json()
        assert_short(status["download"])
        assert httpx.get(status["download"]["url"]).json()["profile"]["user_id"] == alice["user_id"]


def test_an_expired_export_url_is_refused_by_the_store_and_a_fresh_one_works(
    make_server: ServerFactory, settings: Settings
) -> None:
    # Three seconds: long enough that a fresh URL still works on a loaded machine by the time it is
    # fetched, short enough to wait out.
    server = make_server(VEIL_EXPORT_URL_TTL="3")
    with server.client() as client:
        alice = user(client)
        request_id, done = confirmed_export(client, settings, alice)
        first = done.json()["download"]
        assert lifetime(first["url"]) == 3
        time.sleep(4.5)
        assert httpx.get(first["url"]).status_code == 403
        # The archive outlives its URLs (VEIL_EXPORT_ARCHIVE_TTL, 900 s by default).
        fresh = client.get(f"/v1/account/requests/{request_id}", headers=bearer(alice)).json()["download"]
        assert fresh["url"] != first["url"]
        fetched = httpx.get(fresh["url"])
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["profile"]["user_id"] == alice["user_id"]
