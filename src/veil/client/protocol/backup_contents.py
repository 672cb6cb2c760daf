"""What an encrypted backup holds: one JSON document (UTF-8), encrypted by protocol/backup.py.

    {"format": "veil-backup/1", "user_id", "email", "created_at",
     "history":           {"<conversation_id>/<sender_device_id>/<message_id>":
                              {"sender_id", "content_type", "key_epoch", "parent_id", "plaintext"}},
     "master_key":        {"public_key", "private_key"} or null,
     "verified_contacts": {"<user_id>": "<master key they verified>"},
     "key_log":           {"log_key", "head", "versions"},
     "group_meta_keys":   {"<conversation_id>": "<key>"},
     "address_book":      {...}}

Binary values are standard base64. `history` is the client's cache of decrypted messages exactly as
the key store keeps it: each text stays bound to the envelope fields it was authenticated with, so a
restored text is shown only for an envelope the server serves with those same fields. `address_book`
is the CLI's (names of contacts and groups), opaque here.

Not in a backup, on purpose: pairwise sessions, sender keys, device keys, prekeys and tokens. A
restoring device is a new device with keys of its own; bringing ratchet state onto a second device
would make two devices encrypt under the same chain positions and undo forward secrecy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from veil.client.protocol.codec import (
    b64decode,
    b64encode,
    canonical_uuid,
    read_bytes,
    read_int,
    read_mapping,
    read_str,
)
from veil.client.protocol.identity import MasterKey, is_acceptable_master_key

FORMAT = "veil-backup/1"
_MEMBERS = {
    "format",
    "user_id",
    "email",
    "created_at",
    "history",
    "master_key",
    "verified_contacts",
    "key_log",
    "group_meta_keys",
    "address_book",
}
_HISTORY_MEMBERS = {"sender_id", "content_type", "key_epoch", "parent_id", "plaintext"}


class MalformedBackupContentsError(ValueError):
    """A backup decrypted but its document is not one this client understands."""


@dataclass(frozen=True)
class KeyLogSnapshot:
    """What the backed-up device knew of the key-transparency log: the pinned log key, the latest
    head it verified (as the API serves heads), and the highest leaf version seen per user."""

    log_key: bytes | None = None
    head: Mapping[str, Any] | None = None
    versions: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupContents:
    user_id: str
    email: str | None
    created_at: str
    history: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    master_key: MasterKey | None = None
    verified_contacts: Mapping[str, bytes] = field(default_factory=dict)
    key_log: KeyLogSnapshot = field(default_factory=KeyLogSnapshot)
    group_meta_keys: Mapping[str, bytes] = field(default_factory=dict)
    address_book: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        document = {
            "format": FORMAT,
            "user_id": canonical_uuid(self.user_id),
            "email": self.email,
            "created_at": self.created_at,
            "history": {key: dict(entry) for key, entry in sorted(self.history.items())},
            "master_key": None
            if self.master_key is None
            else {
                "public_key": b64encode(self.master_key.public_key),
                "private_key": b64encode(self.master_key.private_bytes()),
            },
            "verified_contacts": {u: b64encode(k) for u, k in sorted(self.verified_contacts.items())},
            "key_log": {
                "log_key": None if self.key_log.log_key is None else b64encode(self.key_log.log_key),
                "head": None if self.key_log.head is None else dict(self.key_log.head),
                "versions": dict(sorted(self.key_log.versions.items())),
            },
            "group_meta_keys": {c: b64encode(k) for c, k in sorted(self.group_meta_keys.items())},
            "address_book": dict(self.address_book),
        }
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, raw: bytes) -> BackupContents:
        """Parse and check a decrypted document; `MalformedBackupContentsError` on anything else."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or set(data) != _MEMBERS:
                raise ValueError(f"a backup document has exactly the members {sorted(_MEMBERS)}")
            if data["format"] != FORMAT:
                raise ValueError(f"unsupported backup format {data['format']!r}")
            email = data["email"]
            if email is not None and not isinstance(email, str):
                raise ValueError("email must be a string or null")
            address_book = data["address_book"]
            if not isinstance(address_book, dict):
                raise ValueError("address_book must be an object")
            return cls(
                user_id=canonical_uuid(read_str(data, "user_id"), field="user_id"),
                email=email,
                created_at=read_str(data, "created_at"),
                history=_read_history(read_mapping(data, "history")),
                master_key=_read_master_key(data["master_key"]),
                verified_contacts={
                    canonical_uuid(str(user_id)): _master_key_bytes(key)
                    for user_id, key in read_mapping(data, "verified_contacts").items()
                },
                key_log=_read_key_log(read_mapping(data, "key_log")),
                group_meta_keys={
                    canonical_uuid(str(cid)): b64decode(key, size=32, field="group meta key")
                    for cid, key in read_mapping(data, "group_meta_keys").items()
                },
                address_book=address_book,
            )
        except (ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
            raise MalformedBackupContentsError(f"the backup's contents are malformed: {error}") from None
        except RecursionError:
            raise MalformedBackupContentsError("the backup's contents are nested too deeply") from None


def history_key(conversation_id: str, sender_device_id: str, message_id: str) -> str:
    """The key of one cached plaintext: ids in canonical form, joined by "/"."""
    return "/".join(canonical_uuid(v) for v in (conversation_id, sender_device_id, message_id))


def _read_history(items: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    history: dict[str, dict[str, Any]] = {}
    for key, entry in items.items():
        parts = str(key).split("/")
        if len(parts) != 3 or history_key(*parts) != key:
            raise ValueError("a history key is three canonical UUIDs joined by '/'")
        if not isinstance(entry, Mapping) or set(entry) != _HISTORY_MEMBERS:
            raise ValueError(f"a history entry has exactly the members {sorted(_HISTORY_MEMBERS)}")
        parent = entry["parent_id"]
        history[key] = {
            "sender_id": canonical_uuid(read_str(entry, "sender_id"), field="sender_id"),
            "content_type": read_str(entry, "content_type"),
            "key_epoch": read_int(entry, "key_epoch"),
            "parent_id": None if parent is None else canonical_uuid(str(parent), field="parent_id"),
            "plaintext": b64encode(read_bytes(entry, "plaintext")),
        }
    return history


def _master_key_bytes(value: object) -> bytes:
    key = b64decode(value, size=32, field="master key")
    if not is_acceptable_master_key(key):
        raise ValueError("a master key in the backup is not a usable key")
    return key


def _read_master_key(value: object) -> MasterKey | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"public_key", "private_key"}:
        raise ValueError("master_key has exactly the members public_key and private_key")
    master = MasterKey.from_private_bytes(read_bytes(value, "private_key", size=32))
    if master.public_key != read_bytes(value, "public_key", size=32):
        raise ValueError("the backup's private master key does not belong to its public key")
    return master


def _read_key_log(value: Mapping[str, Any]) -> KeyLogSnapshot:
    if set(value) != {"log_key", "head", "versions"}:
        raise ValueError("key_log has exactly the members head, log_key and versions")
    head = value["head"]
    if head is not None and not isinstance(head, Mapping):
        raise ValueError("key_log.head must be an object or null")
    return KeyLogSnapshot(
        log_key=None if value["log_key"] is None else read_bytes(value, "log_key", size=32),
        head=head,
        versions={
            canonical_uuid(str(user_id)): read_int({"v": version}, "v")
            for user_id, version in read_mapping(value, "versions").items()
        },
    )
