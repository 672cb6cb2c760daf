"""A `veil-client` profile: one directory per account and device, holding the key store and a small
settings file.

    ~/.veil-client/<profile>/       (or $VEIL_CLIENT_HOME/<profile>/, or --home), mode 0700
        keystore.veilks             the device's keys, sessions and message cache, encrypted under the
                                    passphrase (`veil.client.sdk.keystore`)
        profile.json                server URL, CA file, own email and user id, the address book
                                    (name -> user id) and group names (name -> conversation id), 0600
        keystore.veilks.lock        the profile's lock: every write of either file is made under
                                    it, from the file as it is then (`veil.client.sdk.profile_lock`)

The API has no lookup by email (that would let anyone probe who has an account), so people swap user
ids out of band and keep them here under a name they choose, an email address for instance. The
settings file holds no key or token; it is readable only by its owner, like `~/.ssh/known_hosts`.

Several commands may run on one profile at once, so a change to the settings is read-modify-write
under the profile's lock: the file is read again, changed and written back before the lock is let
go, and a contact added by one command is never lost to another's group name (docs/adr/0020).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.client.sdk.profile_lock import ProfileLock

DEFAULT_URL = "https://localhost:8443"
DEFAULT_PROFILE = "default"
_SETTINGS_VERSION = 1


class ProfileError(Exception):
    """The profile cannot be used as asked (an unknown name, an unreadable file); the text is for people."""


def default_home() -> Path:
    configured = os.environ.get("VEIL_CLIENT_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".veil-client"


def as_uuid(text: str) -> str | None:
    """The canonical form of `text` if it is a UUID, else None."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


@dataclass
class Profile:
    directory: Path
    url: str | None = None
    ca_file: str | None = None
    email: str | None = None
    user_id: str | None = None
    contacts: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    # One per profile and process: the key store client is given this one too (`Context.client`).
    lock: ProfileLock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.lock = ProfileLock.beside(self.keystore)

    @classmethod
    def open(cls, home: Path | None, name: str) -> Profile:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ProfileError(f"{name!r} is not a usable profile name")
        profile = cls((home or default_home()) / name)
        profile._load()
        return profile

    @property
    def keystore(self) -> Path:
        return self.directory / "keystore.veilks"

    @property
    def settings_file(self) -> Path:
        return self.directory / "profile.json"

    def ensure_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    # Names -------------------------------------------------------------------------------------

    def user_id_of(self, who: str) -> str:
        """A user id from an address-book name (an email, say) or a user id itself."""
        if who in self.contacts:
            return self.contacts[who]
        if (user_id := as_uuid(who)) is not None:
            return user_id
        raise ProfileError(
            f"{who!r} is not in your address book. The server does not look people up by email: ask "
            f"them for their user id (`veil-client whoami` shows it) and run "
            f"`veil-client contacts add {who} USER_ID`."
        )

    def name_of(self, user_id: str) -> str:
        """How to show a user: "you", their address-book name, or the start of their id."""
        if user_id == self.user_id:
            return "you"
        for name, known in self.contacts.items():
            if known == user_id:
                return name
        return user_id[:8]

    def group_name_of(self, conversation_id: str) -> str | None:
        for name, known in self.groups.items():
            if known == conversation_id:
                return name
        return None

    def add_contact(self, name: str, user_id: str) -> None:
        canonical = as_uuid(user_id)
        if canonical is None:
            raise ProfileError(f"{user_id!r} is not a user id (it looks like 6f1c0e8a-…)")
        if as_uuid(name) is not None:
            raise ProfileError("a contact's name cannot itself be a user id")
        with self._editing():
            self.contacts[name] = canonical

    def remove_contact(self, name: str) -> None:
        with self._editing():
            if self.contacts.pop(name, None) is None:
                raise ProfileError(f"{name!r} is not in your address book")

    def name_group(self, name: str, conversation_id: str) -> None:
        if as_uuid(name) is not None:
            raise ProfileError("a group's name cannot itself be an id")
        with self._editing():
            self.groups[name] = conversation_id

    def forget_group(self, conversation_id: str) -> None:
        with self._editing():
            self.groups = {name: cid for name, cid in self.groups.items() if cid != conversation_id}

    def remember_login(self, url: str, ca_file: str | None, email: str, user_id: str) -> None:
        """After a login: keep where and who, so later commands need no --url or --ca-file."""
        with self._editing():
            self.url, self.ca_file, self.email, self.user_id = url, ca_file, email, user_id

    # Files -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _editing(self) -> Iterator[None]:
        """Change the settings as they are on disk now (another command may have written them since
        this one read them), under the profile's lock; written back unless the change raised."""
        self.ensure_directory()
        with self.lock.held():
            self._load()
            yield
            self._write()

    def _write(self) -> None:
        """Write the settings atomically (a temporary 0600 file renamed over the old one)."""
        body = {
            "version": _SETTINGS_VERSION,
            "url": self.url,
            "ca_file": self.ca_file,
            "email": self.email,
            "user_id": self.user_id,
            "contacts": self.contacts,
            "groups": self.groups,
        }
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".profile-", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(body, file, indent=2, sort_keys=True)
                file.write("\n")
            os.replace(temporary, self.settings_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def erase(self) -> None:
        """Remove this profile's files (after the account was erased: its keys are of no use)."""
        if not self.directory.is_dir():
            return
        with self.lock.held():  # a command still running on the profile finds no keystore after
            for path in (self.keystore, self.settings_file):
                path.unlink(missing_ok=True)
        # The lock file stays: a process waiting on it must not end up holding a lock on a file
        # that a new process no longer sees (unlinking would let both in).

    def _load(self) -> None:
        try:
            raw: Any = json.loads(self.settings_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            raise ProfileError(f"cannot read {self.settings_file}: {error}") from None
        if not isinstance(raw, dict) or raw.get("version") != _SETTINGS_VERSION:
            raise ProfileError(f"{self.settings_file} is not a veil-client profile")
        self.url = _text_or_none(raw.get("url"))
        self.ca_file = _text_or_none(raw.get("ca_file"))
        self.email = _text_or_none(raw.get("email"))
        self.user_id = _text_or_none(raw.get("user_id"))
        self.contacts = _names(raw.get("contacts"))
        self.groups = _names(raw.get("groups"))


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _names(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if as_uuid(str(v)) is not None}
