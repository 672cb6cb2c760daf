"""What every `veil-client` command starts from: the profile, the server it speaks to, and the
`VeilClient` opened on the profile's key store, and the account password once a command asked for it.

The server URL and CA file come from the command line, then the environment (`VEIL_URL`,
`VEIL_CA_FILE`), then what the profile remembered at the last login, then the defaults. The key
store is opened with the key its unlock agent holds (`veil-client unlock`) or else with the
passphrase, which is asked for only when a command needs the key store; secrets come from the
sources `credentials` lists, in its order.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from veil.client.cli import agent_socket, credentials
from veil.client.cli.failures import NOT_SIGNED_IN, UserError
from veil.client.cli.profile import DEFAULT_URL, Profile, as_uuid
from veil.client.protocol.errors import KeystoreFormatError, WrongPassphraseError
from veil.client.sdk.http import VeilClient
from veil.client.sdk.keystore import KeystoreKey, ScryptParams
from veil.client.sdk.models import Conversation, VeilError

# Lowers the key store's Scrypt cost (never below the keystore's floor); meant for tests, where the
# default cost would dominate every command.
SCRYPT_VARIABLE = "VEIL_CLIENT_SCRYPT_LOG2N"


@dataclass
class Context:
    profile: Profile
    url: str
    ca_file: str | None
    # The first line of standard input when the command was given --password-stdin.
    password_from_stdin: str | None = field(default=None, repr=False)
    _client: VeilClient | None = field(default=None, repr=False)
    _anonymous: VeilClient | None = field(default=None, repr=False)
    # Kept once asked for, so that a key store created later in the command is refused the same secret.
    _account_password: str | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls, profile: Profile, url: str | None, ca_file: str | None, *, password_stdin: bool = False
    ) -> Context:
        """What a command starts from; with `password_stdin`, the password is read now, before
        anything else can read standard input."""
        chosen_url = url or os.environ.get("VEIL_URL") or profile.url or DEFAULT_URL
        if "://" not in chosen_url:
            raise UserError(f"{chosen_url!r} is not a URL (it looks like https://veil.example.org)")
        chosen_ca = ca_file or os.environ.get("VEIL_CA_FILE") or profile.ca_file
        if chosen_ca is not None:
            chosen_ca = str(Path(chosen_ca).expanduser().resolve())
        from_stdin = credentials.password_from_stdin() if password_stdin else None
        return cls(profile, chosen_url.rstrip("/"), chosen_ca, from_stdin)

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

    def account_password(self, *, choosing: bool = False) -> str:
        """The account password, from the first source `credentials` lists that has one."""
        self._account_password = credentials.account_password(self.password_from_stdin, choosing=choosing)
        return self._account_password

    def client(self) -> VeilClient:
        """The client on this profile's key store: opened with the unlock agent's key when one runs,
        else with the passphrase (created on first use: a passphrase is chosen)."""
        if self._client is None:
            self.profile.ensure_directory()
            if self.profile.keystore.exists():
                self._client = self._unlocked_client()
        if self._client is None:
            creating = not self.profile.keystore.exists()
            passphrase = credentials.keystore_passphrase(
                self.profile.directory, creating=creating, account_password=self._account_password
            )
            self._client = self._open(passphrase=passphrase)
        return self._client

    def _unlocked_client(self) -> VeilClient | None:
        """The client opened with the key the profile's agent holds; None without a (working) agent."""
        key = agent_socket.request_key(agent_socket.socket_path(self.profile.directory))
        if key is None:
            return None
        try:
            return self._open(keystore_key=key)
        except WrongPassphraseError:  # re-encrypted since the unlock: the agent ends itself
            return None

    def _open(self, *, passphrase: str | None = None, keystore_key: KeystoreKey | None = None) -> VeilClient:
        return VeilClient(
            self.url,
            verify=self.tls(),
            keystore=self.profile.keystore,
            passphrase=passphrase,
            keystore_key=keystore_key,
            scrypt=_scrypt_params(),
            lock=self.profile.lock,
        )

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

    def require_key_store(self) -> None:
        """Refuse early (before any password or passphrase is asked) a profile never signed in."""
        if not self.profile.keystore.exists():
            raise UserError(NOT_SIGNED_IN)

    def signed_in_client(self) -> VeilClient:
        """The client, refusing early (before any passphrase prompt) when there is no session."""
        self.require_key_store()
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
