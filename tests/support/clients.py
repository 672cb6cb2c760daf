"""Signed-in reference clients (`veil.client`) for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from tests.support.server import LiveServer
from tests.support.users import PASSWORD, new_email
from veil.client.http import VeilClient
from veil.client.keystore import ScryptParams

FAST = ScryptParams(log2_n=10)  # tests only: the default Scrypt cost would dominate every save


class Clients:
    """Signed-in reference clients, each with its own keystore, closed at the end of the test."""

    def __init__(self, api: LiveServer, tmp_path: Path) -> None:
        self.api = api
        self.tmp_path = tmp_path
        self.opened: list[VeilClient] = []
        self.emails: dict[str, str] = {}

    def open(self, name: str) -> VeilClient:
        client = VeilClient(
            self.api.base_url,
            verify=self.api.ca_file,
            keystore=self.keystore(name),
            passphrase=self.passphrase(name),
            scrypt=FAST,
        )
        self.opened.append(client)
        return client

    def new(self, name: str) -> VeilClient:
        client = self.open(name)
        email = new_email()
        client.register(email, PASSWORD)
        client.login(email, PASSWORD, device_name=name)
        self.emails[name] = email
        return client

    def keystore(self, name: str) -> Path:
        return self.tmp_path / f"{name}.veilks"

    @staticmethod
    def passphrase(name: str) -> str:
        return f"{name}'s keystore passphrase"

    def close(self) -> None:
        for client in self.opened:
            client.close()
