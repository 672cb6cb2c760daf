"""Auth over the wire: login, refresh rotation and reuse, logout, sessions (sign-up: test_signup.py)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, new_email, register, request_signup


def test_register_login_and_token_pair_shape(api: LiveServer) -> None:
    with api.client() as client:
        email = new_email()
        code = request_signup(client, email)
        created = client.post("/v1/auth/register/verify", json={"email": email, "code": code})
        assert created.status_code == 201
        user_id = created.json()["user_id"]
        pair = login(client, email.upper(), device_name="laptop")  # emails are normalised
        assert pair["token_type"] == "Bearer"
        assert pair["user_id"] == user_id
        assert pair["expires_in"] == 900
        assert 30 * 86400 - 5 <= pair["refresh_expires_in"] <= 30 * 86400
        assert len(pair["refresh_token"]) >= 43  # 256 bits, base64url
        assert len(pair["device_token"]) >= 43
        sessions = client.get("/v1/auth/sessions", headers=bearer(pair)).json()["items"]
        assert [(s["session_id"], s["device_name"], s["current"]) for s in sessions] == [
            (pair["session_id"], "laptop", True)
        ]
        assert sessions[0]["ip"] == "127.0.0.1"


@pytest.mark.parametrize("password", ["1234567", "password", "Password1", "qwertyuiop", "x" * 129])
def test_weak_or_oversized_passwords_are_422(api: LiveServer, password: str) -> None:
    with api.client() as client:
        response = client.post("/v1/auth/register", json={"email": new_email(), "password": password})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == [["password"]]


@pytest.mark.parametrize("password", ["eight ch", "pässwörd mit ümlauten", "密码密码密码密码", "x" * 128])
def test_any_unicode_password_of_8_to_128_characters_is_accepted(api: LiveServer, password: str) -> None:
    with api.client() as client:
        email = register(client, password=password)
        login(client, email, password)
        wrong = client.post("/v1/auth/login", json={"email": email, "password": password[:-1] + "!"})
        assert wrong.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@example.org", "password": 12345678},
        {"email": "a@example.org", "password": PASSWORD, "is_admin": True},
        {"email": "a@example.org"},
    ],
)
def test_malformed_registrations_are_422(api: LiveServer, body: dict[str, object]) -> None:
    with api.client() as client:
        assert client.post("/v1/auth/register", json=body).status_code == 422


def test_unknown_email_and_wrong_password_are_indistinguishable(api: LiveServer) -> None:
    with api.client() as client:
        email = register(client)
        unknown = client.post("/v1/auth/login", json={"email": new_email(), "password": PASSWORD})
        wrong = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD + "x"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.content == wrong.content
    varying = {"date", "x-request-id", "content-length"}
    assert {k: v for k, v in unknown.headers.items() if k not in varying} == {
        k: v for k, v in wrong.headers.items() if k not in varying
    }


def test_refresh_rotates_and_reuse_revokes_the_whole_session(api: LiveServer) -> None:
    with api.client() as client:
        first = login(client, register(client))
        rotated = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert rotated.status_code == 200
        second = rotated.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert second["session_id"] == first["session_id"]
        # Rotation never extends the absolute lifetime.
        assert second["refresh_expires_in"] <= first["refresh_expires_in"]
        assert client.get("/v1/auth/sessions", headers=bearer(second)).status_code == 200

        replay = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert replay.status_code == 401
        # The family is revoked: the newest refresh token and the access tokens stop working.
        assert (
            client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code
            == 401
        )
        assert client.get("/v1/auth/sessions", headers=bearer(second)).status_code == 401
        assert client.get("/v1/auth/sessions", headers=bearer(first)).status_code == 401
    assert '"kind":"refresh_reuse"' in api.logs()


def test_unknown_refresh_token_is_401(api: LiveServer) -> None:
    with api.client() as client:
        assert client.post("/v1/auth/refresh", json={"refresh_token": "A" * 43}).status_code == 401


async def test_fifty_concurrent_refreshes_have_exactly_one_winner(api: LiveServer) -> None:
    with api.client() as client:
        pair = login(client, register(client))
    async with api.async_client() as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
                for _ in range(50)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1
    assert statuses.count(401) == 49
    # The losers count as reuse: the session is gone, the winner's new tokens with it.
    winner = next(r.json() for r in responses if r.status_code == 200)
    with api.client() as client:
        assert client.get("/v1/auth/sessions", headers=bearer(winner)).status_code == 401


def test_logout_refuses_the_access_token_on_the_very_next_request(api: LiveServer) -> None:
    with api.client() as client:
        pair = login(client, register(client))
        assert client.get("/v1/auth/sessions", headers=bearer(pair)).status_code == 200  # now cached
        assert client.post("/v1/auth/logout", headers=bearer(pair)).status_code == 204
        assert client.get("/v1/auth/sessions", headers=bearer(pair)).status_code == 401
        assert (
            client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
        )


def test_revocation_reaches_every_process(make_server: object) -> None:
    first = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")  # type: ignore[operator]
    second = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")  # type: ignore[operator]
    with first.client() as a, second.client() as b:
        pair = login(a, register(a))
        assert b.get("/v1/auth/sessions", headers=bearer(pair)).status_code == 200  # cached in `second`
        assert a.post("/v1/auth/logout", headers=bearer(pair)).status_code == 204
        assert b.get("/v1/auth/sessions", headers=bearer(pair)).status_code == 401


def test_list_and_revoke_own_sessions_only(api: LiveServer) -> None:
    with api.client() as client:
        email = register(client)
        phone = login(client, email, device_name="phone")
        laptop = login(client, email, device_name="laptop")
        items = client.get("/v1/auth/sessions", headers=bearer(laptop)).json()["items"]
        assert {i["device_name"] for i in items} == {"phone", "laptop"}

        other = login(client, register(client))
        # Someone else's session, and a session that does not exist, look the same: 404.
        assert (
            client.delete(f"/v1/auth/sessions/{phone['session_id']}", headers=bearer(other)).status_code
            == 404
        )
        assert client.delete("/v1/auth/sessions/not-a-uuid", headers=bearer(other)).status_code == 404

        assert (
            client.delete(f"/v1/auth/sessions/{phone['session_id']}", headers=bearer(laptop)).status_code
            == 204
        )
        assert client.get("/v1/auth/sessions", headers=bearer(phone)).status_code == 401
        items = client.get("/v1/auth/sessions", headers=bearer(laptop)).json()["items"]
        assert [i["device_name"] for i in items] == ["laptop"]


def test_jwks_publishes_the_verification_keys(api: LiveServer) -> None:
    with api.client() as client:
        keys = client.get("/v1/auth/jwks").json()["keys"]
    assert keys
    assert all(k["alg"] == "ES256" and k["kty"] == "EC" and "d" not in k for k in keys)


@pytest.mark.parametrize("header", ["Bearer", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "Token abc"])
def test_bad_authorization_headers_are_401(api: LiveServer, header: str) -> None:
    with api.client() as client:
        response = client.get("/v1/auth/sessions", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
