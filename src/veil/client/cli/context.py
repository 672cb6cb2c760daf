"""What every `veil-client` command starts from: the profile, the server it speaks to, and the
`VeilClient` opened on the profile's key store.

The server URL and CA file come from the command line, then the environment (`VEIL_URL`,
`VEIL_CA_FILE`), then what the profile remembered at the last login, then the defaults. The key
store passphrase comes from `VEIL_CLIENT_PASSPHRASE` or is asked for, and only when a command needs
the key store.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from veil.client.cli.failures import NOT_SIGNED_IN, UserError
from veil.client.cli.profile import DEFAULT_URL, Profile, as_uuid
from veil.client.cli.prompts import ask_secret
from veil.client.protocol.errors import KeystoreFormatError
from veil.client.sdk.http import VeilClient
from veil.client.sdk.keystore import ScryptParams
from veil.client.sdk.models import Conversation, VeilError

PASSPHRASE_VARIABLE = "VEIL_CLIENT_PASSPHRASE"  # noqa: S105 (the name of a variable)
# Lowers the key store's Scrypt cost (never below the keystore's floor); meant for tests, where the
# default cost would dominate every command.
SCRYPT_VARIABLE = "VEIL_CLIENT_SCRYPT_LOG2N"


@dataclass
class Context:
    profile: Profile
    url: str
    ca_file: str | None
    _client: VeilClient | None = field(default=None, repr=False)
    _anonymous: VeilClient | None = field(default=None, repr=False)

    @classmethod
    def create(cls, profile: Profile, url: str | None, ca_file: str | None) -> Context:
        chosen_url = url or os.environ.get("VEIL_URL") or profile.url or DEFAULT_URL
        if "://" not in chosen_url:
            raise UserError(f"{chosen_url!r} is not a URL (it looks like https://veil.example.org)")
        chosen_ca = ca_file or os.environ.get("VEIL_CA_FILE") or profile.ca_file
        if chosen_ca is not None:
            chosen_ca = str(Path(chosen_ca).expanduser().resolve())
        return cls(profile, chosen_url.rstrip("/"), chosen_ca)

    def tls(self) -> ssl.SSLContext:
        """The system's trusted CAs, or only the one given (the development CA, say)."""
        if self.ca_file is None:
            return ssl.create_default_context()
        if not Path(self.ca_file).is_file():
            raise UserError(f"The CA file {self.ca_file} does not exist (check --ca-file).")
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except ssl.SSLError:
            raise UserError(f"{self.ca_file} is not a PEM CA certificate (check --ca-file).") from None

    def client(self) -> VeilClient:
        """The client on this profile's key store (created on first use: a passphrase is chosen)."""
        if self._client is None:
            self.profile.ensure_directory()
            creating = not self.profile.keystore.exists()
            self._client = VeilClient(
                self.url,
                verify=self.tls(),
                keystore=self.profile.keystore,
                passphrase=self._passphrase(creating=creating),
                scrypt=_scrypt_params(),
                lock=self.profile.lock,
            )
        return self._client

    def client_for(self, email: str) -> VeilClient:
        """A client for a command about `email` that needs no signed-in device (finishing a sign-up,
        resetting a password): the key store's if this profile belongs to that address, so that
        what the command changes about its device is recorded there, else one without a key store
        (no passphrase asked, nothing written)."""
        mine = self.profile.email is not None and self.profile.email.casefold() == email.casefold()
        if mine and self.profile.keystore.exists():
            return self.client()
        if self._anonymous is None:
            self._anonymous = VeilClient(self.url, verify=self.tls())
        return self._anonymous

    def signed_in_client(self) -> VeilClient:
        """The client, refusing early (before any passphrase prompt) when there is no session."""
        if not self.profile.keystore.exists():
            raise UserError(NOT_SIGNED_IN)
        client = self.client()
        if not client.signed_in:
            raise UserError(NOT_SIGNED_IN)
        return client

    def remember_server(self, email: str, user_id: str) -> None:
        """After a login: keep where and who, so later commands need no --url or --ca-file."""
        self.profile.remember_login(self.url, self.ca_file, email, user_id)

    def take_warnings(self) -> list[str]:
        """What the clients opened so far noticed since the last call (opens none)."""
        return [w for c in (self._client, self._anonymous) if c is not None for w in c.take_warnings()]

    def close(self) -> None:
        for client in (self._client, self._anonymous):
            if client is not None:
                client.close()

    # Naming conversations ----------------------------------------------------------------------

    def group_id(self, group: str) -> str:
        """A group's conversation id from its local name or the id itself."""
        if group in self.profile.groups:
            return self.profile.groups[group]
        if (conversation_id := as_uuid(group)) is not None:
            return conversation_id
        raise UserError(
            f"{group!r} is not a group name you know; use its id (`veil-client conversations` lists them)."
        )

    def conversation_with(self, target: str) -> Conversation:
        """The conversation a person means by `target`: a group (by name or id) or someone to talk
        to directly (by address-book name or user id), whose direct conversation is found or made."""
        client = self.signed_in_client()
        if target in self.profile.groups:
            return client.conversation(self.profile.groups[target])
        if target not in self.profile.contacts and (conversation_id := as_uuid(target)) is not None:
            for conversation in client.conversations():
                if conversation.conversation_id == conversation_id:
                    return conversation
        user_id = self.profile.user_id_of(target)
        if user_id == client.user_id:
            raise UserError("That is you; a direct conversation needs someone else.")
        try:
            return client.create_direct(user_id)
        except VeilError as error:
            if error.status == 404:
                raise UserError(f"There is no user or conversation {target!r} that you can see.") from None
            raise

    def _passphrase(self, *, creating: bool) -> str:
        configured = os.environ.get(PASSPHRASE_VARIABLE)
        if configured:
            return configured
        if creating:
            return ask_secret(
                f"Choose a passphrase for the key store in {self.profile.directory}: ", confirm=True
            )
        return ask_secret("Key store passphrase: ")


def _scrypt_params() -> ScryptParams | None:
    configured = os.environ.get(SCRYPT_VARIABLE)
    if not configured:
        return None
    if not configured.isdigit():
        raise UserError(f"{SCRYPT_VARIABLE} must be a whole number (log2 of Scrypt's N).")
    params = ScryptParams(log2_n=int(configured))
    try:
        params.check()
    except KeystoreFormatError:
        raise UserError(f"{SCRYPT_VARIABLE} is out of the range the key store accepts (10 to 22).") from None
    return params
