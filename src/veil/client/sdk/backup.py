"""The encrypted backup: moving it to and from the user's backup slot, and taking one in on restore.

The server keeps one opaque object per user (`PUT /v1/backup` reserves a presigned upload like an
attachment's, `POST /v1/backup/complete` makes it current, `GET /v1/backup` hands out a download,
`DELETE /v1/backup` removes it). It only ever sees ciphertext: the object is encrypted under a key
derived from a recovery key that is shown to the person once and never sent (protocol/backup.py,
the document inside in protocol/backup_contents.py).

A restore may only make this device *know more*, never trust more than it would otherwise
(docs/e2ee.md, "Backups"):

- the backed-up head of the key-transparency log is taken only if it is signed by a log key this
  device trusts and a consistency proof links it to the head this device holds, and the per-user
  version floors only rise;
- the master key certifies this device only if it is the one the account publishes now, proven by
  the log (the lost-laptop path: no other device is needed);
- a contact is marked verified again only while the key this device holds for them (pinned from
  a lookup the log proved) is the one that was verified, with no change of it pending; otherwise
  they stay unverified, with a warning;
- cached plaintexts are added where none is cached, and stay bound to the envelope fields they were
  authenticated with, so the server cannot show a restored text under another envelope.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx

from veil.client.protocol.backup import BackupOwnerError, decrypt_backup, encrypt_backup
from veil.client.protocol.backup_contents import BackupContents, KeyLogSnapshot
from veil.client.protocol.codec import b64decode, b64encode
from veil.client.protocol.key_log import KeyLogState
from veil.client.protocol.transparency import SignedTreeHead, TransparencyError
from veil.client.protocol.trust import TrustStore
from veil.client.sdk.directory import Directory
from veil.client.sdk.group_names import GroupMetaKeys
from veil.client.sdk.identity import DeviceIdentity
from veil.client.sdk.key_log import KeyLog
from veil.client.sdk.models import VeilError
from veil.client.sdk.object_store import TransferError, get_presigned, put_presigned

Call = Callable[..., httpx.Response]
Warn = Callable[[str], None]


# More than any server would keep (its default limit is 100 MiB): a restore never spools more.
MAX_BACKUP_BYTES = 1 << 30


_REPLACED = (
    "Another device of this account made a backup at the same time, so the recovery key of this "
    "attempt would open nothing; run `backup create` again."
)


class NoBackupError(Exception):
    """The account has no current backup in its slot."""


class BackupReplacedError(Exception):
    """The completed backup is not the one this device uploaded (another device raced it)."""


@dataclass(frozen=True)
class BackupStatus:
    """The current backup as the server describes it (size and SHA-256 of the ciphertext)."""

    size: int
    sha256: str
    created_at: str


@dataclass(frozen=True)
class MadeBackup:
    """A backup just made: the recovery key's text (to show once) and what the server now holds."""

    recovery_key: str
    status: BackupStatus


@dataclass(frozen=True)
class RestoredBackup:
    """What a restore took in."""

    created_at: str
    messages: int  # messages whose text was added (those already cached here were kept)
    approved: bool  # the backup's master key approved this device just now
    verified_contacts: int  # contacts marked verified again
    address_book: Mapping[str, Any]


class BackupSlot:
    """The user's backup slot on the server, and the object store behind its presigned URLs."""

    def __init__(self, call: Call, store_http: httpx.Client) -> None:
        self._call = call
        self._store_http = store_http

    def upload(self, contents: BackupContents, recovery_key: bytes) -> BackupStatus:
        """Encrypt `contents`, reserve the slot's upload for exactly that object, send it to the
        store and make it current. Until the completion the previous backup stays.

        The plaintext stays in memory (it already is, as one document); only ciphertext is spooled
        to a temporary file. The answer to the completion must describe the object sent here: if
        another device of the account replaced the reservation meanwhile, it does not, and this
        fails rather than show a recovery key that opens nothing. A completion whose answer was
        lost is confirmed by reading the slot back."""
        with tempfile.TemporaryFile() as spool:
            encrypted = encrypt_backup(io.BytesIO(contents.encode()), spool, recovery_key, contents.user_id)
            sent = (encrypted.size, b64encode(encrypted.sha256))
            request = {"size": sent[0], "sha256": sent[1]}
            reservation = self._call("PUT", "/v1/backup", json=request, expect=(200, 201)).json()
            spool.seek(0)
            put_presigned(self._store_http, reservation["upload"], spool)
        try:
            completed = _status(self._call("POST", "/v1/backup/complete").json())
        except (httpx.TransportError, VeilError) as error:
            if isinstance(error, VeilError) and error.status == 404:  # another device completed ours
                raise BackupReplacedError(_REPLACED) from None
            if isinstance(error, VeilError) and error.status < 500:
                raise
            current = self.status()  # the answer may have been lost after the server completed
            if current is None:
                raise
            completed = current
        if (completed.size, completed.sha256) != sent:
            raise BackupReplacedError(_REPLACED)
        return completed

    def status(self) -> BackupStatus | None:
        try:
            return _status(self._call("GET", "/v1/backup").json())
        except VeilError as error:
            if error.status == 404:
                return None
            raise

    def delete(self) -> None:
        self._call("DELETE", "/v1/backup", expect=(204, 404))

    def download(self, recovery_key: bytes, user_id: str) -> BackupContents:
        """Fetch the current backup, check it is the object the server describes, and decrypt it.

        `NoBackupError` if there is none; `BackupDecryptionError` (wrong key, damaged or replaced)
        or `BackupOwnerError` (another account's) from protocol/backup.py."""
        try:
            body = self._call("GET", "/v1/backup").json()
        except VeilError as error:
            if error.status == 404:
                raise NoBackupError("There is no backup of this account on the server.") from None
            raise
        described = _status(body)
        if described.size > MAX_BACKUP_BYTES:  # the server's word decides what is spooled here
            raise TransferError(f"the server describes a backup of {described.size} bytes, more than any")
        with tempfile.TemporaryFile() as spool:
            digest = get_presigned(
                self._store_http, str(body["download"]["url"]), spool, max_bytes=described.size
            )
            if b64encode(digest) != described.sha256:
                raise TransferError("the backup downloaded is not the object the server describes")
            spool.seek(0)
            plain = io.BytesIO()  # the master key and history in clear: memory only, never a file
            decrypt_backup(spool, plain, recovery_key, user_id)
            contents = BackupContents.decode(plain.getvalue())
        if contents.user_id != user_id:  # the header said this user, and it is authenticated: belt and braces
            raise BackupOwnerError("This backup belongs to another account.")
        return contents


def _status(body: Mapping[str, Any]) -> BackupStatus:
    try:
        return BackupStatus(
            size=int(body["size"]), sha256=str(body["sha256"]), created_at=str(body["created_at"])
        )
    except (KeyError, TypeError, ValueError):
        raise TransferError("the server's description of the backup is malformed") from None


# Taking a backup in -----------------------------------------------------------------------------


@dataclass
class Restore:
    """The parts of a client's state that a restore may add to, and the lookups it checks with."""

    user_id: str
    trust: TrustStore
    directory: Directory
    identity: DeviceIdentity
    key_log: KeyLog
    plaintexts: MutableMapping[str, dict[str, Any]]
    group_meta: GroupMetaKeys
    warn: Warn
    save: Callable[[], None]

    def apply(self, contents: BackupContents) -> RestoredBackup:
        # The log first: what it adds (a head, version floors) makes every later lookup stricter.
        self._take_log(contents)
        approved = self._take_master_key(contents)
        verified = self._take_verifications(contents)
        added = 0
        for key, entry in contents.history.items():
            if key not in self.plaintexts:
                self.plaintexts[key] = dict(entry)
                added += entry["content_type"] != "system"  # key-log gossip is not a message people see
        for cid, meta_key in contents.group_meta_keys.items():
            if self.group_meta.key(cid) is None:
                self.group_meta.keep(cid, meta_key)
        self.save()
        return RestoredBackup(contents.created_at, added, approved, verified, contents.address_book)

    def _take_log(self, contents: BackupContents) -> None:
        snapshot = contents.key_log
        state: KeyLogState = self.key_log.state
        for user_id, version in snapshot.versions.items():
            state.note_version(user_id, version)  # a floor only rises
        if snapshot.head is None:
            return
        try:
            self.key_log.adopt_head(SignedTreeHead.from_wire(snapshot.head), "the tree head in the backup")
        except TransparencyError as error:
            self.warn(
                f"The key log your backup saw does not check out against the one the server shows now "
                f"({error}); it was not taken in. Compare safety numbers with your contacts."
            )
        except (ValueError, KeyError, TypeError):
            self.warn("The key-log head in the backup is malformed; it was not taken in.")

    def _take_master_key(self, contents: BackupContents) -> bool:
        """Certify this device with the backed-up master key if it is the account's published one
        and this device is not approved yet; keep its private half like a primary device."""
        master = contents.master_key
        if master is None:
            return False
        published = self.directory.server_identity(self.user_id)
        if published != master.public_key:
            self.warn(
                "The master key in the backup is no longer your account's (it was reset since the "
                "backup was made): it approved nothing. Approve this device from one you use now."
            )
            return False
        own = self.trust.own_master_public_key
        if own is not None and own != master.public_key:
            return False  # this device follows another key; the directory warns about that
        was_pending = self.identity.certificate is None
        try:
            self.trust.install_own_master(master.public_key, master)
        except ValueError:  # a change of the own key is pending here: the user decides that first
            return False
        if not was_pending:
            return False
        self.save()  # the master key is kept before it is used, like a new one in `set_up`
        self.identity.set_up(self.save)
        return self.identity.certificate is not None

    def _take_verifications(self, contents: BackupContents) -> int:
        verified = 0
        for user_id, key in contents.verified_contacts.items():
            if user_id == self.user_id:
                continue
            try:
                current = self.directory.master_key_of(user_id)
            except (VeilError, TransparencyError):
                current = None
            if current == key and self.trust.pending(user_id) is None:
                if not self.trust.is_verified(user_id):
                    self.trust.mark_verified(user_id)
                verified += 1
            else:
                why = (
                    "their master key could not be looked up and proven now"
                    if current is None
                    else "their master key has changed since"
                    if current != key
                    else "a change of their master key is waiting for you to accept it"
                )
                self.warn(
                    f"User {user_id[:8]} was verified in your backup, but {why}: they are not marked "
                    "verified. Compare safety numbers again (`veil-client verify`)."
                )
        return verified


def contents_from(
    *,
    user_id: str,
    email: str | None,
    created_at: str,
    plaintexts: Mapping[str, Mapping[str, Any]],
    trust: TrustStore,
    key_log: KeyLogState,
    group_meta: GroupMetaKeys,
    address_book: Mapping[str, Any],
) -> BackupContents:
    """What a backup of this device holds (protocol/backup_contents.py says what, and what not)."""
    head = key_log.heads.head
    return BackupContents(
        user_id=user_id,
        email=email,
        created_at=created_at,
        history={key: dict(entry) for key, entry in plaintexts.items()},
        master_key=trust.own_master,
        verified_contacts={
            u: key
            for u in trust.users()
            if u != user_id and trust.is_verified(u) and (key := trust.pinned(u)) is not None
        },
        key_log=KeyLogSnapshot(
            log_key=key_log.log_key,
            head=None if head is None else head.to_wire(),
            versions=dict(key_log.versions),
        ),
        group_meta_keys={
            str(cid): b64decode(key, size=32, field="group meta key")
            for cid, key in group_meta.to_state()["keys"].items()
        },
        address_book=dict(address_book),
    )
