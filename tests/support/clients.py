"""Signed-in reference clients (`veil.client`) for end-to-end tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support.server import LiveServer
from tests.support.stackdir import test_mail_dir
from tests.support.users import PASSWORD, new_email
from veil.client.sdk.http import VeilClient
from veil.client.sdk.keystore import ScryptParams
from veil.devstack import mailbox

FAST = ScryptParams(log2_n=10)  # tests only: the default Scrypt cost would dominate every save


class FakeClock:
    """A clock the test moves by hand, for the client's `clock` parameter."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Clients:
    """Signed-in reference clients, each with its own keystore, closed at the end of the test."""

    def __init__(self, api: LiveServer, tmp_path: Path) -> None:
        self.api = api
        self.tmp_path = tmp_path
        self.opened: list[VeilClient] = []
        self.emails: dict[str, str] = {}

    def open(self, name: str, **options: Any) -> VeilClient:
        """A client with its own key store; `options` go to `VeilClient` (`clock`, `transport`,
        `epoch_grace_seconds`, ...)."""
        client = VeilClient(
            self.api.base_url,
            verify=self.api.ca_file,
            keystore=self.keystore(name),
            passphrase=self.passphrase(name),
            scrypt=FAST,
            **options,
        )
        self.opened.append(client)
        return client

    def new(self, name: str, **options: Any) -> VeilClient:
        """A new user, signed up and signed in on a new client (`options` as for `open`)."""
        client = self.open(name, **options)
        email = new_email()
        self.sign_up(client, email)
        client.login(email, PASSWORD, device_name=name)
        self.emails[name] = email
        return client

    @staticmethod
    def sign_up(client: VeilClient, email: str, password: str = PASSWORD) -> str:
        """Register `email` with the code the sink received, as a person would; the user id."""
        before = len(mailbox.messages_to(test_mail_dir(), email))
        client.register(email, password)
        code = mailbox.wait_for_code(test_mail_dir(), email, count=before + 1)
        return client.verify_registration(email, code)

    def keystore(self, name: str) -> Path:
        return self.tmp_path / f"{name}.veilks"

    @staticmethod
    def passphrase(name: str) -> str:
        return f"{name}'s keystore passphrase"

    def close(self) -> None:
        for client in self.opened:
            client.close()
