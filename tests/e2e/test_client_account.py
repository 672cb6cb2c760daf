"""The reference client's account features against a live server: the device token it keeps and
presents at login, password change and reset, and blocking."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support import stackdir
from tests.support.clients import FAST, Clients
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, new_email
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import VeilError
from veil.devstack import mailbox

NEW_PASSWORD = "a brand new passphrase 9"


class Recorder(httpx.BaseTransport):
    """Passes requests to the server and keeps each login's request and answer bodies."""

    def __init__(self, api: LiveServer) -> None:
        self._inner = httpx.HTTPTransport(verify=api.ssl_context())
        self.logins: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.url.path == "/v1/auth/login":
            response.read()
            self.logins.append((json.loads(request.content), response.json()))
        return response

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def recorder(api: LiveServer) -> Iterator[Recorder]:
    made = Recorder(api)
    try:
        yield made
    finally:
        made.close()


def recorded_client(api: LiveServer, recorder: Recorder, keystore: Path) -> VeilClient:
    return VeilClient(
        api.base_url, keystore=keystore, passphrase="passphrase", scrypt=FAST, transport=recorder
    )


def test_the_device_token_is_kept_in_the_keystore_and_presented(
    api: LiveServer, recorder: Recorder, tmp_path: Path
) -> None:
    email = new_email()
    keystore = tmp_path / "ada.veilks"
    with recorded_client(api, recorder, keystore) as ada:
        Clients.sign_up(ada, email)
        ada.login(email, PASSWORD)
        first_request, first_answer = recorder.logins[0]
        assert "device_token" not in first_request  # nothing known yet
        token = first_answer["device_token"]
        assert isinstance(token, str) and token
        ada.logout()
    # A secret like the refresh token: only in the encrypted key store, never in clear.
    assert token.encode() not in keystore.read_bytes()

    with recorded_client(api, recorder, keystore) as again:  # a later run of the program
        again.login(email, PASSWORD)
        assert recorder.logins[1][0]["device_token"] == token
    # Another address presents nothing (tokens are kept per server and address).
    with recorded_client(api, recorder, keystore) as other:
        other_email = new_email()
        Clients.sign_up(other, other_email)
        other.login(other_email, PASSWORD)
        assert "device_token" not in recorder.logins[2][0]


def test_password_change_keeps_this_device_and_ends_the_others(clients: Clients) -> None:
    ada = clients.new("ada")
    email = clients.emails["ada"]
    laptop = clients.open("laptop")
    laptop.login(email, PASSWORD)
    with pytest.raises(VeilError) as wrong:
        ada.change_password("not the password", NEW_PASSWORD)
    assert wrong.value.status == 403
    ada.change_password(PASSWORD, NEW_PASSWORD)
    assert ada.account()["email"] == email
    with pytest.raises(VeilError) as ended:
        laptop.account()
    assert ended.value.status == 401 and not laptop.signed_in
    assert [d.device_id for d in ada.devices(ada.user_id)] == [ada.device_id]
    with pytest.raises(VeilError):
        laptop.login(email, PASSWORD)
    laptop.login(email, NEW_PASSWORD)


def test_password_reset_leaves_no_device_behind(
    api: LiveServer, clients: Clients, recorder: Recorder, tmp_path: Path
) -> None:
    email = new_email()
    with recorded_client(api, recorder, tmp_path / "ada.veilks") as ada:
        Clients.sign_up(ada, email)
        ada.login(email, PASSWORD)
        user_id, old_device = ada.user_id, ada.device_id
        ada.logout()
        ada.login(email, PASSWORD)
        assert "device_token" in recorder.logins[-1][0]

        before = len(mailbox.messages_to(stackdir.test_mail_dir(), email))
        ada.request_password_reset(email)
        code = mailbox.wait_for_code(stackdir.test_mail_dir(), email, count=before + 1)
        with pytest.raises(VeilError) as wrong:
            ada.confirm_password_reset(email, "000000" if code != "000000" else "111111", NEW_PASSWORD)
        assert wrong.value.status == 400 and ada.signed_in
        ada.confirm_password_reset(email, code, NEW_PASSWORD)
        # The server removed every device of the account, this one included: the client knows.
        assert not ada.signed_in
        bob = clients.new("bob")
        assert bob.devices(user_id) == []
        with pytest.raises(VeilError) as old:
            ada.login(email, PASSWORD)
        assert old.value.status == 401
        ada.login(email, NEW_PASSWORD)  # a new device, presenting no token of a removed one
        assert "device_token" not in recorder.logins[-1][0]
        assert ada.device_id != old_device
        assert [d.device_id for d in bob.devices(user_id)] == [ada.device_id]

    # Unknown addresses get the same answer (no account oracle).
    with VeilClient(api.base_url, verify=api.ssl_context()) as anyone:
        anyone.request_password_reset(new_email())


def test_block_unblock_and_list(clients: Clients) -> None:
    ada, bob, carol = clients.new("ada"), clients.new("bob"), clients.new("carol")
    assert ada.blocks() == []
    ada.block(bob.user_id)
    ada.block(carol.user_id)
    ada.block(bob.user_id)  # again: still one entry
    assert sorted(b.user_id for b in ada.blocks()) == sorted([bob.user_id, carol.user_id])
    with pytest.raises(VeilError) as refused:
        bob.create_direct(ada.user_id)
    assert refused.value.status == 404
    ada.unblock(bob.user_id)
    assert [b.user_id for b in ada.blocks()] == [carol.user_id]
    assert bob.create_direct(ada.user_id).conversation_id


def test_a_known_device_signs_in_while_strangers_lock_the_account(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    api = make_server(VEIL_AUTH_RATE="10000", VEIL_AUTH_BURST="10000", VEIL_LOGIN_FAILURES="3")
    email = new_email()
    keystore = tmp_path / "ada.veilks"
    with VeilClient(
        api.base_url, verify=api.ssl_context(), keystore=keystore, passphrase="p", scrypt=FAST
    ) as ada:
        Clients.sign_up(ada, email)
        ada.login(email, PASSWORD)
        ada.logout()
    with api.client() as stranger:
        for _ in range(5):
            guess = stranger.post("/v1/auth/login", json={"email": email, "password": "a wrong guess 123"})
            assert guess.status_code in (401, 429)
        # The account is now closed to clients the server does not know, the right password or not.
        locked = stranger.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert locked.status_code == 429
    # The owner's machine presents the device token from its key store and gets in.
    with VeilClient(
        api.base_url, verify=api.ssl_context(), keystore=keystore, passphrase="p", scrypt=FAST
    ) as ada:
        ada.login(email, PASSWORD)
        assert ada.account()["email"] == email
