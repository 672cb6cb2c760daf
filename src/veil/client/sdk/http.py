"""`VeilClient`: the reference client's synchronous HTTP layer around `ClientCrypto`.

The cryptographic core (`session.py`) does no I/O; this module is the other half of a client: it
signs in, publishes the device's public keys, fetches bundles and queued device messages, keeps
group sender keys distributed, sends and reads conversation messages, and persists everything it
must not forget. It uses only the public API; the scheme is described in docs/e2ee.md.

Why it is shaped the way it is:

- **State is saved before its effects leave the process.** A chain index or one-time prekey that a
  peer has seen but our saved state has not would be reused after a restart (peers refuse reuse
  as a replay), and a refresh token the server rotated but we did not save would be presented
  again later, which the server treats as theft and answers by revoking the whole session (the
  device). So every change is written to the keystore before the request that publishes it, and
  token pairs are written as soon as they arrive.
- **One writer per profile.** Every public operation holds the profile's lock and starts from the
  newest keystore on disk (sdk/profile_lock.py, docs/adr/0020), so other processes on the same
  profile neither fork its chains nor present a refresh token that was already rotated (two
  presentations of one token count as reuse, which ends the session); a refresh that another
  thread or process did while we waited is used, not repeated.
- **Decryption results are kept.** Message keys are deleted on use, so a group message can be
  decrypted once; the client remembers the plaintext of every message it opened (and of its own
  messages, which it can never decrypt) so that history can be read again. The cache lives in the
  encrypted keystore, next to the keys.
- **Failures of single messages do not stop a fetch.** A forged, replayed or undecryptable message
  is returned with `error` set instead of raising, so one bad envelope (which anyone can queue for
  a device) cannot block a device's mailbox.

The keystore file is the `ClientCrypto` state with one extra member, `veil_http` (the refresh token,
the device tokens logins answered, which devices hold our sender keys, the plaintext cache and
device messages received but not yet handed to the caller), so `ClientCrypto.load` still opens it.
Scrypt runs once per process (or never, given a `KeystoreKey` derived before): the key it derives is
kept and reused for every save and every reload, as the key store's salt stays the same across saves
(sdk/keystore.py). `ScryptParams` set the cost of a new key store's key; tests pass cheaper ones.

The client is meant for one thread at a time; its operations are serialised all the same.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from veil.client.protocol.attachments import FileReference, decrypt_file, encrypt_file
from veil.client.protocol.codec import b64decode, b64encode, canonical_uuid
from veil.client.protocol.commit import creation_commit, make_commit
from veil.client.protocol.errors import (
    CryptoError,
    DecryptionError,
    KeystoreFormatError,
    MalformedMessageError,
    MembershipError,
    UnknownSenderKeyError,
)
from veil.client.protocol.group_meta import (
    GroupMeta,
    MetaKeyPayload,
    is_meta_key_payload,
    new_meta_key,
    open_meta,
    seal_meta,
)
from veil.client.protocol.identity import LINK_SECRET_SIZE, parse_safety_number_qr, safety_number
from veil.client.protocol.key_log import KeyLogState, OwnChange, decode_gossip, is_gossip
from veil.client.protocol.keys import DEFAULT_PQ_ONE_TIME_PREKEYS
from veil.client.protocol.membership import MembershipView
from veil.client.protocol.recovery_key import format_recovery_key, new_recovery_key, parse_recovery_key
from veil.client.protocol.sender_keys import SenderKeyDistribution
from veil.client.protocol.session import ClientCrypto
from veil.client.protocol.transparency import VerifiedTreeHead
from veil.client.protocol.trust import ListedDevice, TrustStore
from veil.client.sdk import backup as backups
from veil.client.sdk.directory import DeviceStatus, Directory
from veil.client.sdk.failure_messages import (
    METADATA_CHANGED,
    NOT_A_MEMBER,
    OWN_NOT_KEPT,
    WRONG_CONVERSATION,
    failure_sentence,
    reason_of,
)
from veil.client.sdk.group_names import GroupMetaKeys
from veil.client.sdk.identity import DeviceIdentity, is_link_payload
from veil.client.sdk.key_log import KeyLog
from veil.client.sdk.keystore import KeystoreKey, ScryptParams, open_keystore, save_state
from veil.client.sdk.memberships import Memberships
from veil.client.sdk.models import (
    Block,
    Conversation,
    Device,
    DeviceMessage,
    DeviceNotApprovedError,
    GroupMessage,
    NotAllowedError,
    NotSignedInError,
    SentFile,
    SentMessage,
    TrustError,
    VeilError,
)
from veil.client.sdk.object_store import TransferError, get_presigned, put_presigned
from veil.client.sdk.profile_lock import (
    ProfileLock,
    SharedKeystore,
    one_operation,
    operations_hold_the_profile_lock,
)
from veil.client.sdk.tokens import SessionTokens, tokens_from_state, tokens_state

HTTP_STATE_VERSION = 2
# Sender keys received before their conversation's membership could be checked wait here.
_MAX_PENDING_SENDER_KEYS = 1000
_PENDING_SENDER_KEYS_PER_DEVICE = 50
# The API's ceilings: messages per device-message batch, items per page, prekeys per upload.
_DEVICE_BATCH = 100
_PAGE = 200
_MAX_PREKEY_UPLOAD = 200
_GROUP_CONTENT_TYPES = frozenset({"text", "file", "reaction", "system"})

Verify = ssl.SSLContext | str | os.PathLike[str] | bool


def _ssl_context(verify: Verify) -> ssl.SSLContext | bool:
    """httpx deprecates CA paths as `verify`: turn one into a context here."""
    if isinstance(verify, str | os.PathLike):
        return ssl.create_default_context(cafile=os.fspath(verify))
    return verify


def _stored_distribution(encoded: object) -> SenderKeyDistribution | None:
    """A waiting sender key as saved in the keystore; None for one saved by the frame-version-1
    client (no key id), which no message of this version can name: it is dropped."""
    raw = b64decode(encoded, field="distribution")
    try:
        return SenderKeyDistribution.decode(raw)
    except MalformedMessageError:
        if raw[:1] == b"\x01":
            return None
        raise


def _dict(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise VeilError(response.status_code, "Unexpected response", "The body is not a JSON object.")
    return body


def _plaintext_key(conversation_id: str, sender_device_id: str, message_id: str) -> str:
    """The cache key of a message: `message_id` is unique per sender only, so a member cannot make
    another member's cached plaintext show up under its own message by reusing its id."""
    return "/".join(canonical_uuid(v) for v in (conversation_id, sender_device_id, message_id))


def _bound_fields(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope fields the ciphertext authenticates, kept with a cached plaintext so that a
    re-served copy with other metadata is not shown as if it had been authenticated."""
    parent = envelope.get("parent_id")
    return {
        "sender_id": canonical_uuid(str(envelope["sender_id"])),
        "content_type": str(envelope["content_type"]),
        "key_epoch": int(envelope["key_epoch"]),
        "parent_id": None if parent is None else canonical_uuid(str(parent)),
    }


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _same_email(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


@operations_hold_the_profile_lock("close", "take_warnings", "refresh")
class VeilClient:
    """One device of one user, talking to a Veil server over HTTPS.

    `keystore` (with its `passphrase`, or its `keystore_key` derived before, as the unlock agent
    holds it) is where the device's state lives between runs; if the file
    exists it is loaded, and the signed-in session in it is resumed by a refresh on first use.
    Without a keystore everything is in memory and lost with the object. Other processes may use
    the same keystore at once: each public method is one operation under `lock` (by default
    `<keystore>.lock`; pass the one a program already holds for the same profile), begun from the
    newest saved state.
    """

    def __init__(
        self,
        base_url: str,
        *,
        verify: Verify = True,
        keystore: str | os.PathLike[str] | None = None,
        passphrase: str | None = None,
        scrypt: ScryptParams | None = None,
        keystore_key: KeystoreKey | None = None,
        one_time_prekeys: int = 100,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        epoch_grace_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
        lock: ProfileLock | None = None,
    ) -> None:
        if keystore is not None and passphrase is None and keystore_key is None:
            raise ValueError("a keystore needs a passphrase or its key")
        self._http = httpx.Client(
            base_url=base_url, verify=_ssl_context(verify), timeout=timeout, transport=transport
        )
        # Presigned transfers go to the object store, with no Veil credentials and a longer read
        # timeout for large files.
        self._store_http = httpx.Client(timeout=httpx.Timeout(timeout, read=max(timeout, 120.0)))
        self._keystore = Path(keystore) if keystore is not None else None
        # Scrypt runs once: the key is derived on the first load (or save, for a new key store) and
        # kept; the passphrase stays only to open a key store another process re-encrypted.
        self._passphrase = passphrase
        self._scrypt = scrypt
        self._keystore_key = keystore_key
        self._one_time = one_time_prekeys
        self._crypto: ClientCrypto | None = None
        self._tokens: SessionTokens | None = None
        # (conversation_id, epoch) -> (id of this device's current sender key for that epoch, the
        # devices that hold it); a rotated key starts again with nobody
        self._distributed: dict[tuple[str, int], tuple[int, set[str]]] = {}
        self._plaintexts: dict[str, dict[str, Any]] = {}
        self._inbox: list[DeviceMessage] = []
        self._conversations: dict[str, Conversation] = {}
        self.dropped_device_messages = 0
        # "<server> <email>" -> the device token its last login answered; kept across logouts and
        # logins to other accounts, because it is what lets this machine in while the account is
        # locked against unknown clients.
        self._device_tokens: dict[str, str] = {}
        self._email: str | None = None  # the address of the current session's login
        # Trust (protocol/trust.py): pinned master keys, and this device's certificate.
        self._trust: TrustStore | None = None
        self._certificate: bytes | None = None
        # Shown only in this device's link code: proves a link payload answers that code.
        self._link_secret = os.urandom(LINK_SECRET_SIZE)
        self._memberships = Memberships(self._call, "")
        # (sender_id, sender_device_id, distribution) decrypted but not yet checked against a roster
        self._pending_sender_keys: list[tuple[str, str, SenderKeyDistribution]] = []
        self._group_meta = GroupMetaKeys()  # keys that open groups' names (sdk/group_names.py)
        # (sender_id, sender_device_id, link payload) decrypted and saved, not yet checked
        self._pending_links: list[tuple[str, str, bytes]] = []
        self._warnings: list[str] = []
        # The key-transparency log as this device has seen it (sdk/key_log.py).
        self._key_log = KeyLog(self._call, self._warn)
        self._epoch_grace = epoch_grace_seconds
        self._clock = clock
        # Other processes may use the same keystore: `lock` is the profile's (one per process).
        self._shared: SharedKeystore | None = None
        if self._keystore is not None:
            self._shared = SharedKeystore(
                self._keystore, lock or ProfileLock.beside(self._keystore), self._reload
            )
            if self._keystore.exists():
                self._shared.catch_up()

    # Lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connections (the session stays valid; see `logout`)."""
        self._http.close()
        self._store_http.close()

    def __enter__(self) -> VeilClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def crypto(self) -> ClientCrypto:
        """This device's cryptographic state."""
        if self._crypto is None:
            raise NotSignedInError("no device yet: call login first")
        return self._crypto

    @property
    def user_id(self) -> str:
        return self.crypto.user_id

    @property
    def device_id(self) -> str:
        """The device id, which is the auth session id."""
        return self.crypto.device_id

    @property
    def signed_in(self) -> bool:
        return self._tokens is not None and self._crypto is not None

    # Auth ----------------------------------------------------------------------------------------

    def register(self, email: str, password: str, invite_code: str | None = None) -> None:
        """Start a sign-up: the server mails a six-digit code to `email`, and
        `verify_registration` with that code creates the account.

        The answer is the same whether or not the address already has an account (its owner gets
        a notice instead of a code), so nothing here tells whether someone is registered.
        `invite_code` is needed where registration is by invitation only.
        """
        body: dict[str, Any] = {"email": email, "password": password}
        if invite_code is not None:
            body["invite_code"] = invite_code
        self._call("POST", "/v1/auth/register", json=body, expect=(202,), auth=False)

    def verify_registration(self, email: str, code: str) -> str:
        """Create the account with the emailed code; returns its user id. Signing in is a separate
        step (`login`). A wrong, expired or used code is a 400 `VeilError`."""
        response = self._call(
            "POST",
            "/v1/auth/register/verify",
            json={"email": email, "code": code},
            expect=(201,),
            auth=False,
        )
        return canonical_uuid(str(_dict(response)["user_id"]))

    def request_password_reset(self, email: str) -> None:
        """Ask for a password-reset code by email (the same answer whether or not `email` has an
        account)."""
        self._call("POST", "/v1/auth/password-reset", json={"email": email}, expect=(202,), auth=False)

    def confirm_password_reset(self, email: str, code: str, new_password: str) -> None:
        """Set a new password with the emailed code.

        The server ends every session of the account and removes all its devices, so if this client
        is signed in to that account its device is gone: it forgets the session (and the device
        token, which named a device that no longer exists), and `login` makes a new device.
        """
        self._call(
            "POST",
            "/v1/auth/password-reset/confirm",
            json={"email": email, "code": code, "new_password": new_password},
            expect=(204,),
            auth=False,
        )
        forgotten = self._device_tokens.pop(self._device_key(email), None) is not None
        if self._email is not None and _same_email(self._email, email):
            self._forget_tokens()
        elif forgotten:
            self._save()

    def login(self, email: str, password: str, device_name: str | None = None) -> None:
        """Sign in as a new device: new session, new keys, published with `PUT /v1/keys`.

        Every login is a new device (the API makes a device of each session), so the previous
        device's keys in this client are replaced; its session is ended first, so that its public
        keys do not stay published for a device nobody holds any more. The keys are saved before
        they are published, so the server never hands out a prekey whose private half could be lost.

        The `device_token` an earlier login to this server and address answered is presented, so
        that someone else's failed guesses at the password (which lock the account for unknown
        clients) never keep this machine out; the new one is kept in the keystore, like the
        refresh token, because it is a credential too.
        """
        if self.signed_in:
            try:
                self.logout()
            except VeilError as error:
                if error.status != 401:  # 401: that session had already ended
                    raise
        body: dict[str, Any] = {"email": email, "password": password}
        if device_name is not None:
            body["device_name"] = device_name
        device_key = self._device_key(email)
        if (known := self._device_tokens.get(device_key)) is not None:
            body["device_token"] = known
        pair = _dict(self._call("POST", "/v1/auth/login", json=body, auth=False))
        user_id = canonical_uuid(str(pair["user_id"]))
        if self._crypto is None or self._crypto.user_id != user_id:
            # Another account: nothing of the previous one's trust or history carries over. The same
            # account keeps its pinned keys, and its master key if this was a primary device.
            self._plaintexts, self._trust = {}, None
            self._key_log.reset()
        self._crypto = ClientCrypto.create(
            user_id, str(pair["session_id"]), one_time=self._one_time, epoch_grace_seconds=self._epoch_grace
        )
        self._distributed, self._inbox, self._conversations = {}, [], {}
        self._trust = self._trust or TrustStore(user_id)
        self._certificate, self._pending_sender_keys, self._pending_links = None, [], []
        self._link_secret = os.urandom(LINK_SECRET_SIZE)
        self._memberships = Memberships(self._call, user_id)
        issued = pair.get("device_token")
        if isinstance(issued, str) and issued:
            self._device_tokens[device_key] = issued
        self._email = email
        self._store_tokens(pair)  # saves the device token and the email along with the session
        self._call("PUT", "/v1/keys", json=self.crypto.bundle())
        identity = self._identity()
        identity.set_up(self._save)
        self._certificate = identity.certificate
        self._save()

    def refresh(self) -> None:
        """Rotate the token pair, under the profile's lock. A caller that waited while another
        thread or process rotated uses the pair it finds (unless that is due too) rather than
        present a token the server already retired, which would be reuse and end the session.
        A refusal is a `SessionEndedError` (expired, or revoked)."""
        seen = self._tokens
        with one_operation(self._shared):  # reloads the keystore if another process saved it
            tokens = self._tokens
            if tokens is None:
                raise NotSignedInError("no session to refresh: call login first")
            now = time.time()
            if seen is not None and tokens.refresh_token != seen.refresh_token and not tokens.access_due(now):
                return
            try:
                response = self._call(
                    "POST", "/v1/auth/refresh", json={"refresh_token": tokens.refresh_token}, auth=False
                )
            except VeilError as error:
                if error.status != 401:
                    raise
                self._forget_tokens()  # the session is over; the token will never work again
                raise tokens.ended(error, now) from None
            self._store_tokens(_dict(response))

    def logout(self) -> None:
        """End this session. The server removes the device's keys and mailbox with it, so the
        device's sessions and sender keys are useless afterwards; a later `login` makes a new one."""
        self._call("POST", "/v1/auth/logout", expect=(204,))
        self._forget_tokens()

    # Trust: master key, device approval, safety numbers ------------------------------------------

    @property
    def identity_role(self) -> str:
        """`primary` (holds the account's master key and approves devices), `linked` (approved by
        another device) or `pending` (waits for approval: it can read nothing new yet)."""
        return self._identity().role

    def link_code(self) -> str:
        """This device's link code, to be approved on a primary device (`approve_device`)."""
        return self._identity().link_code()

    def approve_device(self, code: str, *, primary: bool = False) -> str:
        """Approve another device of this account by its link code: certify it and send it the
        master key (the private half only with `primary`). Returns its device id."""
        identity = self._identity()
        device_id = identity.approve(code, self._send_link_payload, primary=primary)
        self._save()
        return device_id

    def poll_link(self) -> bool:
        """Take in device messages (a link message among them makes this device linked); True
        once this device is approved."""
        self._receive_device_messages()
        return self._certificate is not None

    def reset_identity(self, password: str) -> None:
        """After losing every device that held the master key: make a new one (this device becomes
        primary). Every other device of the account loses its approval, and contacts are warned."""
        identity = self._identity()
        identity.reset(password)
        self._certificate = identity.certificate
        self._save()

    def devices_of(self, user_id: str) -> list[DeviceStatus]:
        """Every device the server lists for `user_id`, with whether this device trusts it."""
        statuses = self._directory().statuses(canonical_uuid(user_id))
        self._save()
        return statuses

    def safety_number(self, user_id: str) -> str:
        """The 60-digit number both users see for each other, from the master keys this device
        pinned (never from what the server shows now)."""
        user_id = canonical_uuid(user_id)
        trust = self._trust_store()
        mine = trust.own_master_public_key
        theirs = self._directory().master_key_of(user_id)
        self._save()
        if mine is None:
            raise TrustError("This device is not approved yet: it has no master key to compare.")
        if theirs is None:
            raise TrustError(
                "That user has no master key yet (they have not signed in with a current client)."
            )
        return safety_number(self.user_id, mine, user_id, theirs)

    def mark_verified(self, user_id: str, *, scanned: str | None = None) -> None:
        """Record that the safety number with `user_id` was compared (and, with `scanned`, that
        the number read from their QR is this one)."""
        user_id = canonical_uuid(user_id)
        if scanned is not None and parse_safety_number_qr(scanned) != self.safety_number(user_id):
            raise TrustError("The scanned safety number is not the one this device computes: not verified.")
        try:
            self._trust_store().mark_verified(user_id)
        except ValueError as error:
            raise TrustError(f"Cannot mark as verified: {error}.") from None
        self._save()

    def is_verified(self, user_id: str) -> bool:
        return self._trust_store().is_verified(canonical_uuid(user_id))

    def changed_identities(self) -> list[str]:
        """Verified users whose master key changed and who get nothing until accepted."""
        trust = self._trust_store()
        return [u for u in trust.users() if trust.pending(u) is not None]

    def accept_identity(self, user_id: str) -> None:
        """Trust the new master key of a user whose key changed (they must be verified again)."""
        try:
            self._trust_store().accept(canonical_uuid(user_id))
        except ValueError as error:
            raise TrustError(f"Nothing to accept: {error}.") from None
        self._save()

    # Key transparency ---------------------------------------------------------------------------

    def transparency_head(self) -> VerifiedTreeHead:
        """The log's latest head, checked: signed by the pinned log key and extending the last head
        this device saw (`TransparencyError` / `SplitViewError` otherwise)."""
        head = self._key_log.head(fresh=True)
        self._save()
        return head

    def own_key_changes(self) -> list[OwnChange]:
        """Look at the own user's latest leaf now (the monitor, which warns about changes this
        device did not make) and return every change of the own keys it has recorded."""
        self._directory().listing(self.user_id)
        self._save()
        return self._key_log.own_changes

    def held_conversations(self) -> dict[str, str]:
        """Conversations where a split view of the log was found, with what was seen: nothing is
        sent to them until `resume_conversation`."""
        return dict(self._key_log.state.split_views)

    def resume_conversation(self, conversation_id: str) -> bool:
        """Send to a held conversation again (the user compared safety numbers); whether it was held."""
        resumed = self._key_log.resume(conversation_id)
        self._save()
        return resumed

    def take_warnings(self) -> list[str]:
        """What this client refused or noticed since the last call, in words for people
        (devices nobody approved, changed keys, membership records that do not check out)."""
        taken, self._warnings = self._warnings, []
        return taken

    # Keys and device messages --------------------------------------------------------------------

    def publish_more_prekeys_if_low(self, threshold: int, *, target: int = 100) -> int:
        """Top the server's one-time prekeys up to `target` when fewer than `threshold` remain, and
        its one-time ML-KEM prekeys up to `DEFAULT_PQ_ONE_TIME_PREKEYS` when fewer than half remain.

        Without one-time prekeys new sessions lose their fourth DH and replay protection (and fall
        back to the last-resort ML-KEM key), so a device should call this now and then. A device
        whose keystore predates PQXDH makes and publishes its last-resort ML-KEM key here. Returns
        how many classical one-time prekeys remain on the server.
        """
        self._publish_post_quantum_key_if_missing()
        counts = _dict(self._call("GET", "/v1/keys/count"))
        remaining, pq_remaining = int(counts["one_time_prekeys"]), int(counts["pq_one_time_prekeys"])
        upload: dict[str, list[dict[str, Any]]] = {}
        if remaining < threshold:
            missing = min(max(target, threshold) - remaining, _MAX_PREKEY_UPLOAD)
            upload["one_time_prekeys"] = self.crypto.add_one_time_prekeys(missing)
        if pq_remaining < DEFAULT_PQ_ONE_TIME_PREKEYS // 2:
            missing = DEFAULT_PQ_ONE_TIME_PREKEYS - pq_remaining
            upload["pq_one_time_prekeys"] = self.crypto.add_pq_one_time_prekeys(missing)
        if not upload:
            return remaining
        self._save()
        response = self._call("POST", "/v1/keys/one-time", json=upload)
        return int(_dict(response)["count"])

    def devices(self, user_id: str) -> list[Device]:
        """Every device the server lists for `user_id`, approved or not, with its public keys
        (`devices_of` says which ones this device trusts)."""
        listed = self._directory().listing(canonical_uuid(user_id))
        return [Device(d.device_id, d.identity_key, d.signing_key) for d in listed]

    def open_session(self, user_id: str) -> list[str]:
        """Set up a pairwise session with every approved device of `user_id` that has none yet.

        Pending device messages are taken in first, so a session a peer already started is used
        rather than a second one (which would burn another of its one-time prekeys). Returns the
        ids of the devices a `session_init` was sent to.
        """
        self._receive_device_messages()
        user_id = canonical_uuid(user_id)
        return self._open_sessions([(user_id, d) for d in self._directory().trusted_devices(user_id)])

    def send_device_payload(
        self, user_id: str, payload: bytes, *, device_ids: Iterable[str] | None = None
    ) -> int:
        """Send `payload` as a `session_message` to each approved device of `user_id` (or the ones
        named), setting up sessions first where needed. Returns how many devices it was sent to."""
        user_id = canonical_uuid(user_id)
        directory = self._directory()
        wanted = None if device_ids is None else {canonical_uuid(d) for d in device_ids}
        targets = [
            (user_id, d)
            for d in directory.trusted_devices(user_id)
            if wanted is None or d.device_id in wanted
        ]
        self._open_sessions(targets)
        messages = [
            self.crypto.encrypt_for_device(u, d.device_id, payload)
            for u, d in targets
            if self._session_is_with(u, d)
        ]
        self._save()
        self._post_device_messages("session_message", messages)
        return len(messages)

    def fetch_device_messages(self) -> list[DeviceMessage]:
        """Everything queued for this device, decrypted, oldest first, and acknowledged.

        Includes messages taken in earlier by other calls (e.g. `history` installs sender keys
        first). Each message is acknowledged (deleted on the server) only after the state its
        decryption produced has been saved, so a crash cannot lose a session or a sender key.
        """
        self._receive_device_messages()
        received, self._inbox = self._inbox, []
        if received:
            self._save()
        return received

    # Conversations -------------------------------------------------------------------------------

    def create_direct(self, user_id: str) -> Conversation:
        """The direct conversation with `user_id` (the existing one if there is one)."""
        response = self._call(
            "POST", "/v1/conversations", json={"type": "direct", "member_id": user_id}, expect=(200, 201)
        )
        return self._remember(Conversation.from_wire(_dict(response)))

    def create_group(self, name: str | None = None, *, description: str = "") -> Conversation:
        """A new group with this user as owner, founded by a signed `created` commit. A `name` (and
        `description`) goes to the server sealed under a new meta key of the group (`encrypted_meta`),
        which members' devices receive with this device's sender key; the name is fixed at creation,
        since no route updates `encrypted_meta`. `ValueError` for a name or description too long."""
        meta = None if name is None else GroupMeta(name, description)
        self._identity().require_approved()
        keys = self.crypto.keys
        assert self._certificate is not None
        body: dict[str, Any] = {
            "type": "group",
            "commit": b64encode(
                creation_commit(
                    actor_id=self.user_id,
                    actor_device_id=self.device_id,
                    signing=keys.signing,
                    identity_key=keys.identity_key,
                    certificate=self._certificate,
                )
            ),
        }
        meta_key = new_meta_key()
        if meta is not None:
            body["encrypted_meta"] = b64encode(seal_meta(meta_key, meta))
        response = self._call("POST", "/v1/conversations", json=body, expect=(201,))
        conversation = self._remember(Conversation.from_wire(_dict(response)))
        if meta is None:
            return conversation
        # Kept only now that the group has an id (lost if this save fails: the name stays unreadable).
        self._group_meta.keep(conversation.conversation_id, meta_key)
        self._save()
        return self._group_meta.named(conversation)

    def invite(self, conversation_id: str, user_id: str) -> None:
        """Invite a user (admins), by a signed `invited` commit."""
        cid, user_id = canonical_uuid(conversation_id), canonical_uuid(user_id)
        self._membership_change(
            cid,
            "invited",
            user_id,
            "POST",
            f"/v1/conversations/{cid}/invitations",
            {"user_id": user_id},
            (201,),
        )

    def accept(self, conversation_id: str) -> None:
        """Join a conversation one was invited to, after checking its membership record; the epoch
        rises, so everyone's keys rotate."""
        cid = canonical_uuid(conversation_id)
        self._membership_change(
            cid, "joined", self.user_id, "POST", f"/v1/conversations/{cid}/invitations/accept"
        )

    def decline(self, conversation_id: str) -> None:
        cid = canonical_uuid(conversation_id)
        self._membership_change(
            cid, "declined", self.user_id, "POST", f"/v1/conversations/{cid}/invitations/decline"
        )
        self._memberships.forget(cid)
        self._save()

    def leave(self, conversation_id: str) -> None:
        """Leave, and delete this device's keys of the conversation: history it could not fetch any
        more anyway, and nothing a later thief of this device could use."""
        cid = canonical_uuid(conversation_id)
        self._membership_change(cid, "left", self.user_id, "DELETE", f"/v1/conversations/{cid}/members/me")
        self._drop_conversation(cid)

    def remove(self, conversation_id: str, user_id: str) -> None:
        """Remove a member (admins). The epoch rises; the next send distributes new sender keys to
        the remaining members only."""
        cid, user_id = canonical_uuid(conversation_id), canonical_uuid(user_id)
        action = "left" if user_id == self.user_id else "removed"
        self._membership_change(cid, action, user_id, "DELETE", f"/v1/conversations/{cid}/members/{user_id}")
        if user_id == self.user_id:
            self._drop_conversation(cid)

    def set_role(self, conversation_id: str, user_id: str, role: str) -> None:
        """Make a joined member an admin, or an admin a member again (the owner only)."""
        cid, user_id = canonical_uuid(conversation_id), canonical_uuid(user_id)
        self._membership_change(
            cid,
            "role_changed",
            user_id,
            "PUT",
            f"/v1/conversations/{cid}/members/{user_id}",
            {"role": role},
            role=role,
        )

    def conversations(self) -> list[Conversation]:
        """Every conversation this user is a member of (joined or invited), groups with their name
        where this device holds the key to it, invitations with who invited (see `Conversation`)."""
        found: list[Conversation] = []
        params: dict[str, Any] = {"limit": _PAGE}
        while True:
            body = _dict(self._call("GET", "/v1/conversations", params=params))
            found.extend(self._remember(Conversation.from_wire(item)) for item in body["items"])
            if body.get("next_cursor") is None:
                break
            params = {"cursor": body["next_cursor"], "limit": _PAGE}
        self._receive_device_messages()  # meta keys that arrived
        before = self._group_meta.to_state()
        named = [self._described(conversation) for conversation in found]
        if self._group_meta.to_state() != before:
            self._save()
        return named

    def _described(self, conversation: Conversation) -> Conversation:
        """A group with its name (its meta keys received are checked first) and, for an open
        invitation, the inviter; both stay None where the membership record does not check out."""
        if conversation.type != "group":
            return conversation
        cid = conversation.conversation_id
        invited = any(m.user_id == self.user_id and m.state == "invited" for m in conversation.members)
        inviter = None
        if invited or self._group_meta.has_pending(cid):
            try:
                view = self._view(conversation)
                self._install_pending_meta_keys(cid, view)
                inviter = self._inviter(cid, view) if invited else None
            except DeviceNotApprovedError:
                pass  # said on every command already; the name shows once this device is approved
            except (TrustError, VeilError) as error:
                self._warn(f"Group {cid[:8]} is shown without its name: {error}")
        return dataclasses.replace(self._group_meta.named(conversation), invited_by=inviter)

    def _inviter(self, cid: str, view: MembershipView) -> str | None:
        """Who invited this user, by the events of the verified record: the server may only name
        one of the group's admins, since only an admin's signed commit can invite."""
        inviter = None
        params: dict[str, Any] = {"limit": _PAGE}
        while True:
            body = _dict(self._call("GET", f"/v1/conversations/{cid}/events", params=params))
            for event in body["items"]:
                subject = canonical_uuid(str(event["subject_id"]))
                if event.get("kind") == "invited" and subject == self.user_id:
                    inviter = canonical_uuid(str(event["actor_id"]))
            if body.get("next_cursor") is None:
                break
            params = {"limit": _PAGE, "cursor": body["next_cursor"]}
        admins = {user for user, role in view.roles.items() if role in ("owner", "admin")}
        return inviter if inviter in admins else None

    def mark(self, conversation_id: str, kind: str, up_to_seq: int) -> None:
        """Tell the conversation's members that messages up to `up_to_seq` were `delivered` or
        `read` here (metadata only; receipts never move backwards)."""
        self._call(
            "POST",
            f"/v1/conversations/{canonical_uuid(conversation_id)}/receipts",
            json={"type": kind, "up_to_seq": up_to_seq},
            expect=(204,),
        )

    def conversation(self, conversation_id: str) -> Conversation:
        """The conversation as the server has it now (also refreshes the cached epoch and members)."""
        return self._remember(
            Conversation.from_wire(_dict(self._call("GET", f"/v1/conversations/{conversation_id}")))
        )

    # Group messages ------------------------------------------------------------------------------

    def distribute_sender_key(self, conversation_id: str, *, conversation: Conversation | None = None) -> int:
        """Give this device's sender key for the current epoch to every approved device of every
        member in the verified roster (this user's other devices included) that lacks it.

        The roster comes from the members' signed commits, not from the server's member list, and
        a device counts only if its owner's master key certified it; everyone else is skipped with
        a warning. Sessions are set up first where needed. Device changes do not move the epoch,
        so every send calls this again: a device approved since then gets the key. The key is
        replaced first when a rotation is due (100 messages, 7 days, or in a direct conversation
        the other side's new key since ours was made: every turn), and a new key goes to every
        device again. Returns how many devices were sent the key.
        """
        current = conversation or self.conversation(conversation_id)
        self._identity().require_approved()
        self._receive_device_messages()
        view = self._view(current)
        # Keys that arrived are installed first: a direct conversation's turn rotation depends on
        # seeing the other side's new key, even when this device sends without reading.
        self._install_pending_sender_keys(current.conversation_id, view)
        cid, epoch = current.conversation_id, view.current_epoch
        roster, roster_hash = view.roster_at(epoch), view.roster_hash_at(epoch)
        if self.user_id not in roster:
            raise TrustError(f"By its membership record you are not a member of conversation {cid[:8]}.")
        directory = self._directory()
        targets = [
            (user_id, device) for user_id in sorted(roster) for device in directory.trusted_devices(user_id)
        ]
        now, turn_based = self._clock(), current.type == "direct"
        # Creates the key on first use (even with nobody to send it to, so that sending can
        # proceed) and replaces it when a rotation is due.
        key_id = self.crypto.current_sender_key_id(
            cid, epoch, roster_hash, now=now, rotate_on_peer_key=turn_based
        )
        distributed_id, holders = self._distributed.get((cid, epoch), (None, set()))
        served = set(holders) if distributed_id == key_id else set()
        pending = [t for t in targets if t[1].device_id not in served]
        self._open_sessions(pending)
        ready = [(u, d.device_id) for u, d in pending if self._session_is_with(u, d)]
        messages = self.crypto.sender_key_messages(
            cid, epoch, roster_hash, ready, now=now, rotate_on_peer_key=turn_based
        )
        self._save()
        self._post_device_messages("sender_key", messages)
        # Recorded only once sent: `send_group_payload` relies on it to know members can read.
        for key in [k for k in self._distributed if k[0] == cid and k[1] < epoch]:
            del self._distributed[key]  # own keys of older epochs are gone from the crypto state too
        self._distributed[(cid, epoch)] = (key_id, served | {device_id for _, device_id in ready})
        self._save()
        self._share_meta_key(cid, targets)
        return len(messages)

    def _share_meta_key(self, cid: str, targets: Sequence[tuple[str, ListedDevice]]) -> None:
        """Hand the group's meta key, if this device holds it, to the roster's devices that were not
        given it yet (the ones of the verified roster `distribute_sender_key` serves)."""
        key = self._group_meta.key(cid)
        if key is None:
            return
        wanted = set(self._group_meta.not_served(cid, [d.device_id for _, d in targets]))
        ready = [(u, d) for u, d in targets if d.device_id in wanted and self._session_is_with(u, d)]
        if not ready:
            return
        payload = MetaKeyPayload(cid, key).encode()
        messages = [self.crypto.encrypt_for_device(u, d.device_id, payload) for u, d in ready]
        self._save()
        self._post_device_messages("session_message", messages)
        self._group_meta.served(cid, [d.device_id for _, d in ready])
        self._save()

    def send_text(self, conversation_id: str, text: str, *, parent_id: str | None = None) -> SentMessage:
        """Encrypt and send a text message under the conversation's current epoch."""
        return self.send_group_payload(conversation_id, text.encode("utf-8"), "text", parent_id=parent_id)

    def send_group_payload(
        self, conversation_id: str, payload: bytes, content_type: str, *, parent_id: str | None = None
    ) -> SentMessage:
        """Encrypt `payload` once for all members with this device's sender key and send it.

        Before each send the sender key goes to any approved device of the verified roster that
        lacks it. If membership changed meanwhile (409 with `current_epoch`), the client checks
        the new membership record, distributes a new sender key to exactly that roster, and
        retries once under the new epoch, so a removed member never receives the key the message
        is sent under. Once a day per conversation, this device's latest key-log head follows the
        message (gossip, `system`); a conversation where a split view was found gets nothing
        (`SplitViewError`) until `resume_conversation`.
        """
        if content_type not in _GROUP_CONTENT_TYPES:
            raise ValueError(f"content_type must be one of {sorted(_GROUP_CONTENT_TYPES)}")
        cid = canonical_uuid(conversation_id)
        self._key_log.require_sendable(cid)
        sent = self._send_group_payload(cid, payload, content_type, parent_id)
        if content_type != "system":
            self._gossip_if_due(cid)
        return sent

    def _gossip_if_due(self, cid: str) -> None:
        """Send this device's latest head to the conversation if a day has passed since the last;
        a failure is only a warning (the message itself was sent)."""
        now = self._clock()
        gossip = self._key_log.gossip_payload(cid, now)
        if gossip is None:
            return
        try:
            self._send_group_payload(cid, gossip, "system", None)
        except (VeilError, CryptoError, TrustError) as error:
            self._warn(f"This device's key-log head could not be shared in {cid[:8]} ({_error_text(error)}).")
            return
        self._key_log.gossiped(cid, now)
        self._save()

    def _send_group_payload(
        self, cid: str, payload: bytes, content_type: str, parent_id: str | None
    ) -> SentMessage:
        current = self._conversations.get(cid) or self.conversation(cid)
        message_id = str(uuid.uuid4())
        key = _plaintext_key(cid, self.device_id, message_id)
        for attempt in range(2):
            self.distribute_sender_key(cid, conversation=current)
            view = self._memberships.cached(cid)
            assert view is not None  # distribute_sender_key verified it
            epoch = view.current_epoch
            envelope = self.crypto.encrypt_group_message(
                cid,
                epoch,
                message_id,
                content_type,
                payload,
                roster_hash=view.roster_hash_at(epoch),
                now=self._clock(),
                parent_id=parent_id,
            )
            # Keep the plaintext before sending: this device can never decrypt its own message.
            self._plaintexts[key] = {
                **_bound_fields({**envelope, "sender_id": self.user_id}),
                "plaintext": b64encode(payload),
            }
            self._save()
            try:
                response = self._call(
                    "POST", f"/v1/conversations/{cid}/messages", json=envelope, expect=(200, 201)
                )
            except VeilError as error:
                self._plaintexts.pop(key, None)
                if attempt == 0 and error.status == 409 and error.current_epoch is not None:
                    current = self.conversation(cid)
                    continue
                self._save()
                raise
            body = _dict(response)
            return SentMessage(str(body["message_id"]), int(body["seq"]), str(body["created_at"]), epoch)
        raise AssertionError("unreachable")  # pragma: no cover

    def send_file(
        self,
        conversation_id: str,
        source: BinaryIO | str | os.PathLike[str],
        *,
        name: str | None = None,
        parent_id: str | None = None,
    ) -> SentFile:
        """Encrypt a file under a fresh key, upload the ciphertext straight to the object store,
        and send a `file` message whose encrypted payload carries the key, digest and name.

        The ciphertext is spooled to a temporary file, so memory holds one chunk at a time.
        """
        cid = canonical_uuid(conversation_id)
        self._key_log.require_sendable(cid)  # before the upload: a held conversation gets nothing
        if not isinstance(source, (str, os.PathLike)):
            return self._send_file(cid, source, name or "file", parent_id)
        path = Path(source)
        with path.open("rb") as file:
            return self._send_file(cid, file, name or path.name, parent_id)

    def _send_file(self, cid: str, source: BinaryIO, name: str, parent_id: str | None) -> SentFile:
        with tempfile.TemporaryFile() as spool:
            encrypted = encrypt_file(source, spool)
            request = {"conversation_id": cid, "size": encrypted.size, "sha256": b64encode(encrypted.sha256)}
            reservation = _dict(self._call("POST", "/v1/attachments", json=request, expect=(201,)))
            attachment_id = str(reservation["attachment_id"])
            spool.seek(0)
            put_presigned(self._store_http, reservation["upload"], spool)
        self._call("POST", f"/v1/attachments/{attachment_id}/complete")
        reference = FileReference(
            attachment_id=attachment_id,
            key=encrypted.key,
            sha256=encrypted.sha256,
            size=encrypted.size,
            name=name,
            plaintext_size=encrypted.plaintext_size,
        )
        sent = self.send_group_payload(cid, reference.encode(), "file", parent_id=parent_id)
        return SentFile(sent, reference)

    def download_file(self, message: GroupMessage, sink: BinaryIO) -> FileReference:
        """Fetch the attachment a `file` message refers to, check that its ciphertext is the one the
        sender encrypted (the digest came end-to-end encrypted), and decrypt it into `sink`."""
        if message.content_type != "file" or message.plaintext is None:
            raise ValueError("not a decrypted file message")
        reference = FileReference.decode(message.plaintext)
        body = _dict(self._call("GET", f"/v1/attachments/{reference.attachment_id}"))
        with tempfile.TemporaryFile() as spool:
            digest = get_presigned(
                self._store_http, str(body["download"]["url"]), spool, max_bytes=reference.size
            )
            if digest != reference.sha256:
                raise DecryptionError("the downloaded file is not the one the sender attached")
            spool.seek(0)
            written = decrypt_file(spool, sink, reference.key)
        if written != reference.plaintext_size:
            raise DecryptionError("the decrypted file has another size than the sender announced")
        return reference

    def delete_attachment(self, attachment_id: str) -> None:
        """Delete one of this user's attachments (its ciphertext leaves the store at once)."""
        self._call("DELETE", f"/v1/attachments/{canonical_uuid(attachment_id)}", expect=(204,))

    def membership(self, conversation_id: str) -> MembershipView:
        """The conversation's membership as its members' signed commits establish it, checked
        against the server's events now; the sender keys received for it are installed on the way
        where their senders belong (`TrustError` if the record does not check out)."""
        cid = canonical_uuid(conversation_id)
        self._receive_device_messages()
        self._identity().require_approved()
        view = self._view(self.conversation(cid))
        self._install_pending_sender_keys(cid, view)
        self._save()
        return view

    def history(self, conversation_id: str, *, after_seq: int = 0) -> list[GroupMessage]:
        """Every message after `after_seq` that this member may read, decrypted, in seq order.

        Pending device messages are taken in first so that sender keys sent ahead of the messages
        are installed. Messages opened before (and this device's own) come from the local cache,
        because their keys are gone; a message that cannot be opened is returned with `error`.
        """
        cid = canonical_uuid(conversation_id)
        view = self.membership(cid)
        if self._key_log.state.pending_gossip:  # heads members sent that the server kept unchecked
            self._key_log.check_pending_gossip()
        messages: list[GroupMessage] = []
        params: dict[str, Any] = {"after_seq": after_seq, "limit": _PAGE}
        changed = False
        while True:
            body = _dict(self._call("GET", f"/v1/conversations/{cid}/messages", params=params))
            for envelope in body["items"]:
                message, opened = self._open_group_message(cid, envelope, view)
                changed = changed or opened
                if message.content_type == "system":  # plumbing, not shown: key-log heads
                    if opened and message.plaintext and is_gossip(message.plaintext):
                        self._check_gossip(cid, message)  # once, when first read
                    continue
                messages.append(message)
            if body.get("next_cursor") is None:
                break
            params = {"cursor": body["next_cursor"], "limit": _PAGE}
        if changed:
            self._save()
        return messages

    # Account and data-subject rights -------------------------------------------------------------

    def account(self) -> dict[str, Any]:
        """`{user_id, email, email_verified, created_at, status}` of the signed-in user."""
        return _dict(self._call("GET", "/v1/account"))

    def change_password(self, current_password: str, new_password: str) -> None:
        """Change the password. The server ends every other session of the account (their devices
        and keys go, as on logout); this one stays signed in. A wrong current password is 403."""
        self._call(
            "POST",
            "/v1/account/password",
            json={"current_password": current_password, "new_password": new_password},
            expect=(204,),
        )

    def block(self, user_id: str) -> None:
        """Block a user: they can no longer invite this user, start a direct conversation with them
        or queue device messages for their devices (the server drops those silently)."""
        self._call("PUT", f"/v1/blocks/{canonical_uuid(user_id)}", expect=(204,))

    def unblock(self, user_id: str) -> None:
        self._call("DELETE", f"/v1/blocks/{canonical_uuid(user_id)}", expect=(204,))

    def blocks(self) -> list[Block]:
        """Everyone this user blocked (every page)."""
        found: list[Block] = []
        params: dict[str, Any] = {"limit": _PAGE}
        while True:
            body = _dict(self._call("GET", "/v1/blocks", params=params))
            found.extend(
                Block(canonical_uuid(str(item["user_id"])), str(item["created_at"])) for item in body["items"]
            )
            if body.get("next_cursor") is None:
                return found
            params = {"cursor": body["next_cursor"], "limit": _PAGE}

    def request_export(self) -> str:
        """Ask for a copy of this account's data; a code is emailed. Returns the request id."""
        return self._account_request({"type": "export"})

    def request_erasure(self, password: str) -> str:
        """Ask for this account to be erased; a code is emailed. Returns the request id."""
        return self._account_request({"type": "erasure", "password": password})

    def request_email_change(self, new_email: str, password: str) -> str:
        """Ask to sign in with another address; the code goes to the new one."""
        return self._account_request({"type": "email_change", "new_email": new_email, "password": password})

    def confirm_request(self, request_id: str, code: str) -> dict[str, Any]:
        """Carry out a request with its emailed code. An export answers with its `download`; an
        erasure ends every session of the account, this one included."""
        response = self._call(
            "POST",
            f"/v1/account/requests/{canonical_uuid(request_id)}/confirm",
            json={"code": code},
            expect=(200, 202),
        )
        body = _dict(response)
        if body.get("type") == "erasure":
            self._forget_tokens()
        return body

    def fetch_export(self, confirmation: Mapping[str, Any]) -> dict[str, Any]:
        """The export archive a confirmed export request points at."""
        response = self._store_http.get(str(confirmation["download"]["url"]))
        if response.status_code != 200:
            raise TransferError(f"the object store refused the download (HTTP {response.status_code})")
        archive: dict[str, Any] = response.json()
        return archive

    def _account_request(self, body: dict[str, Any]) -> str:
        return str(_dict(self._call("POST", "/v1/account/requests", json=body, expect=(202,)))["request_id"])

    # Encrypted backup (sdk/backup.py) -----------------------------------------------------------

    def create_backup(self, address_book: Mapping[str, Any]) -> backups.MadeBackup:
        """Upload an encrypted backup of what a new device of this account could not learn again:
        the decrypted history this device keeps, the master key if it holds it, verified contacts,
        the key log's pinned key and head, group name keys, and the caller's `address_book`.

        It is encrypted under a new recovery key, returned as text with the backup's description:
        show it once, never store it. (A new key each time: a server can then only ever hand out
        the one backup that key opens, never roll a device back to an older one.) Replaces the
        previous backup once the upload is complete; `BackupReplacedError` if another device of
        the account completed one at the same time."""
        key = new_recovery_key()
        if self._certificate is None:
            # A pending device knows nothing worth keeping; its backup would replace a real one.
            raise DeviceNotApprovedError(
                "This device is not approved yet: a backup made here would hold nothing and replace the "
                "one on the server. Restore it here (`veil-client backup restore`), or back up from a "
                "device you already use."
            )
        contents = backups.contents_from(
            user_id=self.user_id,
            email=self._email,
            created_at=datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="seconds"),
            plaintexts=self._plaintexts,
            trust=self._trust_store(),
            key_log=self._key_log.state,
            group_meta=self._group_meta,
            address_book=address_book,
        )
        status = backups.BackupSlot(self._call, self._store_http).upload(contents, key)
        return backups.MadeBackup(recovery_key=format_recovery_key(key), status=status)

    def restore_backup(self, recovery_key: str) -> backups.RestoredBackup:
        """Take in this account's backup on this (new) device; returns what was taken in, with the
        address book the backup carried. The text is checked before anything is downloaded
        (`RecoveryKeyTextError`); then `NoBackupError`, `BackupDecryptionError` (wrong key, damaged
        or replaced) or `BackupOwnerError` (another account's). What a restore may change, and what
        it never trusts, is in sdk/backup.py."""
        key = parse_recovery_key(recovery_key)
        contents = backups.BackupSlot(self._call, self._store_http).download(key, self.user_id)
        identity = self._identity()

        def save() -> None:
            self._certificate = identity.certificate
            self._save()

        restored = backups.Restore(
            user_id=self.user_id,
            trust=self._trust_store(),
            directory=self._directory(),
            identity=identity,
            key_log=self._key_log,
            plaintexts=self._plaintexts,
            group_meta=self._group_meta,
            warn=self._warn,
            save=save,
        ).apply(contents)
        save()
        return restored

    def backup_status(self) -> backups.BackupStatus | None:
        """The account's current backup (size, SHA-256 and time of the ciphertext), or None."""
        return backups.BackupSlot(self._call, self._store_http).status()

    def delete_backup(self) -> None:
        """Remove the account's backup from the server (nothing happens if there is none)."""
        backups.BackupSlot(self._call, self._store_http).delete()

    # Internals -----------------------------------------------------------------------------------

    def _open_group_message(
        self, cid: str, envelope: Mapping[str, Any], view: MembershipView
    ) -> tuple[GroupMessage, bool]:
        """Decrypt one stored envelope, or take it from the cache; says whether state changed."""

        def result(plaintext: bytes | None, reason: str | None) -> GroupMessage:
            parent = envelope.get("parent_id")
            return GroupMessage(
                message_id=str(envelope["message_id"]),
                conversation_id=str(envelope["conversation_id"]),
                seq=int(envelope["seq"]),
                sender_id=str(envelope["sender_id"]),
                sender_device_id=str(envelope["sender_device_id"]),
                content_type=str(envelope["content_type"]),
                key_epoch=int(envelope["key_epoch"]),
                parent_id=None if parent is None else str(parent),
                created_at=str(envelope["created_at"]),
                plaintext=plaintext,
                error=None if reason is None else failure_sentence(reason),
                failure=reason,
            )

        if canonical_uuid(str(envelope["conversation_id"])) != cid:
            return result(None, WRONG_CONVERSATION), False
        key = _plaintext_key(cid, str(envelope["sender_device_id"]), str(envelope["message_id"]))
        cached = self._plaintexts.get(key)
        if cached is not None:
            if {k: v for k, v in cached.items() if k != "plaintext"} != _bound_fields(envelope):
                return result(None, METADATA_CHANGED), False
            return result(b64decode(cached["plaintext"], field="plaintext"), None), False
        if canonical_uuid(str(envelope["sender_device_id"])) == self.device_id:
            return result(None, OWN_NOT_KEPT), False
        try:
            roster_hash = view.roster_hash_at(int(envelope["key_epoch"]))
            plaintext = self.crypto.decrypt_group_message(envelope, roster_hash, now=self._clock())
        except CryptoError as error:
            # Not cached: a missing sender key may still arrive, and a retry then succeeds.
            return result(None, self._unread_reason(error, view, int(envelope["key_epoch"]))), False
        self._plaintexts[key] = {**_bound_fields(envelope), "plaintext": b64encode(plaintext)}
        return result(plaintext, None), True

    def _unread_reason(self, error: CryptoError, view: MembershipView, epoch: int) -> str:
        """Why a message stays unread (sdk/failure_messages.py): a missing key of an epoch at which
        the verified roster did not hold this user will never come."""
        if type(error) is UnknownSenderKeyError:
            try:
                if self.user_id not in view.roster_at(epoch):
                    return NOT_A_MEMBER
            except MembershipError:
                return NOT_A_MEMBER  # an epoch the record does not cover
        return reason_of(error)

    def _check_gossip(self, cid: str, message: GroupMessage) -> None:
        assert message.plaintext is not None
        try:
            head = decode_gossip(message.plaintext)
        except CryptoError as error:
            self._warn(f"Ignored a malformed key-log head from user {message.sender_id[:8]} ({error}).")
            return
        self._key_log.check_gossip(cid, message.sender_id, head)

    def _publish_post_quantum_key_if_missing(self) -> None:
        """Make and publish this device's last-resort ML-KEM prekey if its keystore predates
        PQXDH: peers refuse bundles without one (a downgrade), so it must be on the server."""
        if self.crypto.ensure_pq_last_resort_prekey() is not None:
            self._save()  # before publishing, like every key (the bundle then carries it)
            self._call("PUT", "/v1/keys", json=self.crypto.bundle(include_one_time=False))

    def _receive_device_messages(self) -> None:
        """Fetch, decrypt, save, then acknowledge every queued device message into `_inbox`; then
        act on the link messages among them (which needs the server, so only once all is saved)."""
        self._publish_post_quantum_key_if_missing()
        self._fetch_device_messages()
        if self._pending_links:
            self._take_links()
        self._rotate_prekeys_if_due()

    def _rotate_prekeys_if_due(self) -> None:
        """Weekly, a new signed prekey and PQ last-resort prekey, once the queued set-ups were read
        with the old ones (kept a while longer for those still in flight). A publication that
        failed is tried again at the next sync."""
        starting = self.crypto.keys.prekeys_rotated_at is None
        if self.crypto.rotate_prekeys_if_due(self._clock()):
            self._save()  # before publishing, like every key
            self._call("PUT", "/v1/keys", json=self.crypto.bundle(include_one_time=False))
            self.crypto.prekeys_published(self._clock())
            self._save()
        elif starting:
            self._save()  # the week started: a command that saves nothing else must not lose it

    def _fetch_device_messages(self) -> None:
        params: dict[str, Any] = {"limit": _PAGE}
        while True:
            body = _dict(self._call("GET", "/v1/devices/messages", params=params))
            gap = body.get("gap")
            if isinstance(gap, Mapping):
                self.dropped_device_messages += int(gap.get("dropped", 0))
            items = body["items"]
            for item in items:
                message = self._open_device_message(item)
                if message is not None:
                    self._inbox.append(message)
            if not items:
                return
            self._save()
            # One acknowledgement per page (at most 500 ids; a page is _PAGE), naming exactly what
            # was saved. Ids already acknowledged elsewhere (e.g. over the WebSocket) are ignored.
            ids = [int(item["id"]) for item in items]
            self._call("POST", "/v1/devices/messages/ack", json={"ids": ids}, expect=(204,))
            if body.get("next_cursor") is None:
                return
            params = {"cursor": body["next_cursor"], "limit": _PAGE}

    def _open_device_message(self, item: Mapping[str, Any]) -> DeviceMessage | None:
        """Decrypt one device message. A sender key waits for its conversation's membership check
        (`_install_pending_sender_keys`), and so does a group's meta key, which is not handed to
        the caller (None), nor is a link message from another device of this user (taken in here)."""
        sender_id = canonical_uuid(str(item["sender_id"]))
        sender_device_id = canonical_uuid(str(item["sender_device_id"]))
        content_type = str(item["content_type"])
        try:
            plaintext: bytes | None = self.crypto.decrypt_device_message(
                sender_id, sender_device_id, content_type, item, now=self._clock()
            )
            error = None
            if content_type == "sender_key" and plaintext is not None:
                distribution = SenderKeyDistribution.decode(plaintext)
                self._hold_sender_key(sender_id, sender_device_id, distribution)
            elif content_type == "session_message" and plaintext is not None and is_link_payload(plaintext):
                self._pending_links.append((sender_id, sender_device_id, plaintext))
                return None
            elif (
                content_type == "session_message" and plaintext is not None and is_meta_key_payload(plaintext)
            ):
                self._group_meta.hold(sender_id, sender_device_id, MetaKeyPayload.decode(plaintext))
                return None
        except CryptoError as failure:
            plaintext, error = None, _error_text(failure)
        return DeviceMessage(
            int(item["id"]),
            sender_id,
            sender_device_id,
            content_type,
            str(item["created_at"]),
            plaintext,
            error,
        )

    def _open_sessions(self, targets: Iterable[tuple[str, ListedDevice]]) -> list[str]:
        """Claim a bundle of each (approved) device without a session and send the `session_init`s.

        The claimed bundle must carry exactly the identity and signing keys the device's certificate
        covers: a server that hands out other keys under an approved device's name is refused.
        """
        messages: list[dict[str, Any]] = []
        for user_id, device in targets:
            device_id = device.device_id
            if device_id == self.device_id or self._session_is_with(user_id, device):
                continue
            # A session set up by someone else under this device's name (a `session_init` is not
            # checked against certificates when it arrives) must never carry keys: start afresh.
            self.crypto.forget_peer(user_id, device_id)
            try:
                bundle = _dict(self._call("POST", f"/v1/users/{user_id}/devices/{device_id}/claim"))
                messages.append(
                    self.crypto.start_session(
                        user_id,
                        device_id,
                        bundle,
                        expected_identity_key=device.identity_key,
                        expected_signing_key=device.signing_key,
                        # Every device of this client publishes ML-KEM prekeys: a bundle without
                        # one is a server stripping it to downgrade the session.
                        require_post_quantum=True,
                    )
                )
            except VeilError as error:
                if error.status == 404:  # the device ended between listing and claiming
                    continue
                raise
            except CryptoError as error:
                self._warn(
                    f"The server handed out keys for device {device_id[:8]} that are not the ones its "
                    f"owner approved ({error}): nothing was sent to it."
                )
        if messages:
            self._save()
            self._post_device_messages("session_init", messages)
        return [str(m["device_id"]) for m in messages]

    def _session_is_with(self, user_id: str, device: ListedDevice) -> bool:
        """Whether this device holds a session that authenticates exactly the certified keys of
        `device` (the one check between a listed device and anything encrypted to it)."""
        if not self.crypto.has_session(user_id, device.device_id):
            return False
        signing = self.crypto.peer_signing_key(user_id, device.device_id)
        return self.crypto.peer_identity_key(user_id, device.device_id) == device.identity_key and (
            signing is None or signing == device.signing_key
        )

    def _post_device_messages(self, content_type: str, messages: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(messages), _DEVICE_BATCH):
            batch = list(messages[start : start + _DEVICE_BATCH])
            self._call(
                "POST",
                "/v1/devices/messages",
                json={"content_type": content_type, "messages": batch},
                expect=(202,),
            )

    def _remember(self, conversation: Conversation) -> Conversation:
        self._conversations[conversation.conversation_id] = conversation
        return conversation

    def _membership_change(
        self,
        cid: str,
        action: str,
        subject: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        expect: tuple[int, ...] = (204,),
        *,
        role: str | None = None,
    ) -> None:
        """Send a membership request with the commit its actor signs, built on the newest verified
        events; if someone changed the membership meanwhile (409 with `last_event_id`), check the
        new events and build the commit again. Direct conversations carry no commits."""
        for attempt in range(3):
            conversation = self.conversation(cid)
            request: dict[str, Any] = dict(body or {})
            if conversation.type == "group":
                self._identity().require_approved()
                view = self._view(conversation)
                request.update(commit=b64encode(self._commit(view, action, subject, role)))
                request.update(after_event_id=view.last_event_id)
            try:
                self._call(method, path, json=request or None, expect=expect)
            except VeilError as error:
                if error.status == 409 and "last_event_id" in error.problem and attempt < 2:
                    continue
                raise
            finally:
                self._conversations.pop(cid, None)
            return

    def _commit(self, view: MembershipView, action: str, subject: str, role: str | None) -> bytes:
        try:
            epoch, roster_hash = view.next_commit_fields(action, self.user_id, subject, role)
        except MembershipError as error:
            raise NotAllowedError(str(error).removeprefix("planned ")) from None
        assert self._certificate is not None
        keys = self.crypto.keys
        return make_commit(
            conversation_id=view.conversation_id,
            epoch=epoch,
            action=action,
            actor_id=self.user_id,
            actor_device_id=self.device_id,
            signing=keys.signing,
            identity_key=keys.identity_key,
            certificate=self._certificate,
            subject_id=subject,
            role=role or "",
            roster_hash=roster_hash,
            previous_hash=view.last_commit_hash,
        )

    def _view(self, conversation: Conversation) -> MembershipView:
        """The conversation's membership, verified from its signed commits up to the epoch the
        server reports (the conversation is fetched again once if it moved on in between)."""
        master_key_of = self._directory().master_key_of
        view = self._memberships.view(conversation, master_key_of)
        if view.current_epoch != conversation.epoch:
            conversation = self.conversation(conversation.conversation_id)
            view = self._memberships.view(conversation, master_key_of)
        if view.current_epoch != conversation.epoch:
            raise TrustError(
                f"The server says conversation {conversation.conversation_id[:8]} is at epoch "
                f"{conversation.epoch}, but its membership record ends at epoch {view.current_epoch}."
            )
        return view

    def _hold_sender_key(self, sender_id: str, device_id: str, distribution: SenderKeyDistribution) -> None:
        """Keep a received sender key until its conversation's membership is checked. Anyone can
        send this device sender keys, so each sender device holds only a few places, and a flood
        from one pushes out its own oldest entries, never another sender's."""
        held = self._pending_sender_keys
        mine = [i for i, entry in enumerate(held) if entry[:2] == (sender_id, device_id)]
        if len(mine) >= _PENDING_SENDER_KEYS_PER_DEVICE:
            del held[mine[0]]
        if len(held) >= _MAX_PENDING_SENDER_KEYS:
            return
        held.append((sender_id, device_id, distribution))

    def _install_pending_sender_keys(self, cid: str, view: MembershipView) -> None:
        """Install the sender keys received for this conversation whose sender the verified
        roster of their epoch holds, from an approved device; drop the others with a warning."""
        keep: list[tuple[str, str, SenderKeyDistribution]] = []
        trusted: dict[str, dict[str, ListedDevice]] = {}
        for sender_id, sender_device_id, distribution in self._pending_sender_keys:
            if distribution.conversation_id != cid or distribution.epoch > view.current_epoch:
                keep.append((sender_id, sender_device_id, distribution))
                continue
            who = f"user {sender_id[:8]}'s device {sender_device_id[:8]}"
            try:
                roster = view.roster_at(distribution.epoch)
                roster_hash = view.roster_hash_at(distribution.epoch)
            except MembershipError:
                continue  # an epoch too old to matter any more
            if sender_id not in roster:
                self._warn(
                    f"Refused a group key from {who}: by the membership record they are not in "
                    f"conversation {cid[:8]} at epoch {distribution.epoch}."
                )
                continue
            if sender_id not in trusted:
                devices = self._directory().trusted_devices(sender_id, sending=False)
                trusted[sender_id] = {d.device_id: d for d in devices}
            device = trusted[sender_id].get(sender_device_id)
            trust = self._trust_store()
            if device is None and (trust.pinned(sender_id) is None or trust.pending(sender_id) is not None):
                # The sender's key is not settled yet (first sight failed, or a verified contact's key
                # changed): the key may become installable once the user accepts it.
                keep.append((sender_id, sender_device_id, distribution))
                continue
            if device is None or not self._session_is_with(sender_id, device):
                self._warn(f"Refused a group key from {who}: that device is not approved by its owner.")
                continue
            try:
                self.crypto.install_sender_key(
                    sender_id, sender_device_id, distribution, roster_hash, now=self._clock()
                )
            except CryptoError as error:
                self._warn(f"Refused a group key from {who}: {error}.")
        self._pending_sender_keys = keep[-_MAX_PENDING_SENDER_KEYS:]
        self._install_pending_meta_keys(cid, view)

    def _install_pending_meta_keys(self, cid: str, view: MembershipView) -> None:
        """Keep the first received meta key of the conversation that comes from an approved device
        of a joined member and opens the group's `encrypted_meta`; drop the others with a warning."""
        for sender_id, sender_device_id, payload in self._group_meta.take_pending(cid):
            if self._group_meta.key(cid) is not None:
                continue  # the name is fixed at creation: one key per group
            who = f"user {sender_id[:8]}'s device {sender_device_id[:8]}"
            if sender_id not in view.members:
                self._warn(f"Refused the name key of group {cid[:8]} from {who}: not a member.")
                continue
            devices = {d.device_id: d for d in self._directory().trusted_devices(sender_id, sending=False)}
            device = devices.get(sender_device_id)
            trust = self._trust_store()
            if device is None and (trust.pinned(sender_id) is None or trust.pending(sender_id) is not None):
                self._group_meta.hold(sender_id, sender_device_id, payload)  # the sender's key is unsettled
                continue
            if device is None or not self._session_is_with(sender_id, device):
                self._warn(
                    f"Refused the name key of group {cid[:8]} from {who}: that device is not approved."
                )
                continue
            conversation = self._conversations.get(cid)
            if conversation is not None and conversation.encrypted_meta is not None:
                try:
                    open_meta(payload.key, conversation.encrypted_meta)
                except CryptoError:
                    self._warn(f"Refused the name key of group {cid[:8]} from {who}: it opens no name.")
                    continue
            self._group_meta.keep(cid, payload.key)

    def _drop_conversation(self, conversation_id: str) -> None:
        cid = canonical_uuid(conversation_id)
        self._conversations.pop(cid, None)
        self._memberships.forget(cid)
        self._pending_sender_keys = [p for p in self._pending_sender_keys if p[2].conversation_id != cid]
        self._group_meta.forget(cid)
        self.crypto.forget_epochs_before(cid, 2**64 - 1)
        for key in [k for k in self._distributed if k[0] == cid]:
            del self._distributed[key]
        self._save()

    def _take_links(self) -> None:
        """Check the link messages received (saved already): one that checks out makes this device
        linked, one that does not is dropped with a warning, one that could not be checked for
        want of the server waits for the next fetch."""
        waiting: list[tuple[str, str, bytes]] = []
        for sender_id, sender_device_id, plaintext in self._pending_links:
            identity = self._identity()
            try:
                identity.accept_link(sender_id, sender_device_id, plaintext)
            except TrustError as error:
                self._warn(str(error))
            except VeilError:
                waiting.append((sender_id, sender_device_id, plaintext))
            else:
                self._certificate = identity.certificate
        self._pending_links = waiting
        self._save()

    def _send_link_payload(self, device: ListedDevice, payload: bytes) -> None:
        self._open_sessions([(self.user_id, device)])
        if not self._session_is_with(self.user_id, device):
            raise TrustError("Could not reach the new device (it has no keys left, or it signed out).")
        message = self.crypto.encrypt_for_device(self.user_id, device.device_id, payload)
        self._save()
        self._post_device_messages("session_message", [message])

    def _trust_store(self) -> TrustStore:
        if self._trust is None:
            self._trust = TrustStore(self.user_id)
        return self._trust

    def _directory(self) -> Directory:
        return Directory(self._call, self._trust_store(), self._key_log, self.device_id, self._warn)

    def _identity(self) -> DeviceIdentity:
        return DeviceIdentity(
            self._call,
            self._directory(),
            self.user_id,
            self.device_id,
            self.crypto.keys,
            self._link_secret,
            self._certificate,
        )

    def _warn(self, text: str) -> None:
        if text not in self._warnings:
            self._warnings.append(text)

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        expect: tuple[int, ...] = (200,),
        auth: bool = True,
    ) -> httpx.Response:
        """One request; an expired access token is refreshed once, any other failure is a `VeilError`."""
        response = self._send(method, path, json, params, auth)
        if auth and response.status_code == 401 and self._tokens is not None:
            self.refresh()
            response = self._send(method, path, json, params, auth)
        if response.status_code not in expect:
            raise VeilError.from_response(response)
        return response

    def _send(
        self, method: str, path: str, json: Any, params: Mapping[str, Any] | None, auth: bool
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._bearer()}"} if auth else {}
        return self._http.request(method, path, json=json, params=params, headers=headers)

    def _bearer(self) -> str:
        if self._tokens is None or self._tokens.access_due(time.time()):
            self.refresh()
        if self._tokens is None or self._tokens.access_token is None:
            raise NotSignedInError("not signed in")
        return self._tokens.access_token

    def _store_tokens(self, pair: Mapping[str, Any]) -> None:
        """Take a new token pair, and save at once: the old refresh token is already dead (the
        access token is kept too, for other processes of the profile to use)."""
        self._tokens = SessionTokens.issued(pair, time.time())
        self._save()

    def _forget_tokens(self) -> None:
        self._tokens = None
        self._save()

    def _device_key(self, email: str) -> str:
        return f"{self._http.base_url} {email.strip().casefold()}"

    # Keystore ------------------------------------------------------------------------------------

    def _save(self) -> None:
        """Write the whole state to the keystore (atomically), if one is configured."""
        if self._keystore is None or self._crypto is None:
            return
        if self._keystore_key is None:  # a new key store: its salt is drawn now, once
            assert self._passphrase is not None
            self._keystore_key = KeystoreKey.new(self._passphrase, self._scrypt)
        state = self._crypto.to_state()
        state["veil_http"] = {
            "version": HTTP_STATE_VERSION,
            **tokens_state(self._tokens),
            "distributed": [
                {"conversation_id": cid, "epoch": epoch, "key_id": key_id, "devices": sorted(devices)}
                for (cid, epoch), (key_id, devices) in self._distributed.items()
            ],
            "plaintexts": self._plaintexts,
            "inbox": [message.to_state() for message in self._inbox],
            "dropped_device_messages": self.dropped_device_messages,
            "device_tokens": self._device_tokens,
            "email": self._email,
            "trust": None if self._trust is None else self._trust.to_state(),
            "key_log": self._key_log.state.to_state(),
            "certificate": None if self._certificate is None else b64encode(self._certificate),
            "link_secret": b64encode(self._link_secret),
            "memberships": self._memberships.to_state(),
            "pending_sender_keys": [
                {
                    "sender_id": sender_id,
                    "sender_device_id": sender_device_id,
                    "distribution": b64encode(distribution.encode()),
                }
                for sender_id, sender_device_id, distribution in self._pending_sender_keys
            ],
            "pending_links": [
                {"sender_id": sender_id, "sender_device_id": device_id, "payload": b64encode(payload)}
                for sender_id, device_id, payload in self._pending_links
            ],
            "group_meta": self._group_meta.to_state(),
        }
        save_state(self._keystore, state, self._keystore_key)

    def _reload(self) -> None:
        """Take in what another process saved (called under the profile's lock)."""
        if self._keystore is not None and self._keystore.exists():
            self._load()
        else:  # removed meanwhile (its account was erased): nothing of it may be saved back
            self._crypto, self._tokens = None, None

    def _load(self) -> None:
        assert self._keystore is not None
        state, self._keystore_key = open_keystore(
            self._keystore, key=self._keystore_key, passphrase=self._passphrase
        )
        try:
            self._crypto = ClientCrypto.from_state(state)
            extra = state.get("veil_http") or {}
            if extra and extra.get("version") != HTTP_STATE_VERSION:
                raise ValueError("unsupported client state version")
            self._tokens = tokens_from_state(extra)
            # Entries without a key id predate sender-key rotation: their keys are sent again.
            self._distributed = {
                (canonical_uuid(str(e["conversation_id"])), int(e["epoch"])): (
                    int(e["key_id"]),
                    {str(d) for d in e["devices"]},
                )
                for e in extra.get("distributed", [])
                if "key_id" in e
            }
            self._plaintexts = dict(extra.get("plaintexts", {}))
            self._inbox = [DeviceMessage.from_state(m) for m in extra.get("inbox", [])]
            self.dropped_device_messages = int(extra.get("dropped_device_messages", 0))
            # Absent from key stores written before device tokens existed.
            self._device_tokens = {str(k): str(v) for k, v in (extra.get("device_tokens") or {}).items()}
            email = extra.get("email")
            self._email = email if isinstance(email, str) else None
            trust = extra.get("trust")
            self._trust = None if trust is None else TrustStore.from_state(trust)
            key_log = extra.get("key_log")  # absent from key stores written before the log
            self._key_log.reset(None if key_log is None else KeyLogState.from_state(key_log))
            self._link_secret = b64decode(extra["link_secret"], size=LINK_SECRET_SIZE, field="link_secret")
            certificate = extra.get("certificate")
            self._certificate = (
                None if certificate is None else b64decode(certificate, size=64, field="certificate")
            )
            self._memberships = Memberships.from_state(
                self._call, self._crypto.user_id, extra.get("memberships", [])
            )
            self._pending_sender_keys = [
                (
                    canonical_uuid(str(item["sender_id"])),
                    canonical_uuid(str(item["sender_device_id"])),
                    distribution,
                )
                for item in extra.get("pending_sender_keys", [])
                if (distribution := _stored_distribution(item["distribution"])) is not None
            ]
            self._pending_links = [
                (
                    canonical_uuid(str(item["sender_id"])),
                    canonical_uuid(str(item["sender_device_id"])),
                    b64decode(item["payload"], field="payload"),
                )
                for item in extra.get("pending_links", [])
            ]
            self._group_meta = GroupMetaKeys.from_state(extra.get("group_meta"))
        except (ValueError, KeyError, TypeError, CryptoError) as error:
            raise KeystoreFormatError(f"keystore state is malformed: {error}") from None

    # Live connection -----------------------------------------------------------------------------

    def access_token(self) -> str:
        """A current access token (refreshed first if due) for the WebSocket's `Authorization:
        Bearer` header. It is a credential: send it to this server only, never print or log it."""
        return self._bearer()
