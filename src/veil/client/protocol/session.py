"""`ClientCrypto`: the one object an HTTP or WebSocket client talks to for all of its cryptography.

It owns a device's keys, its pairwise sessions (keyed by peer user and device) and its group sender
keys, turns plaintext into the exact wire dicts the API takes, and turns what the server delivers
back into plaintext. It never does I/O, and all of its state round-trips through
`to_state`/`from_state`. Persisting after every call that changes state (before sending what it
returned) is the caller's duty: a process that restarts from an older state (a crash, a restored
backup) reuses chain indices. Every message, pairwise or group, has a random nonce, so a reused
message key never meets the same nonce twice and nothing is disclosed: receivers refuse such
messages as replays or cannot open them. Pairwise sessions are Double Ratchets
(`double_ratchet`): they heal after a state theft once both sides have sent and received a
message under fresh ratchet keys.

A peer device's keys are pinned on first use, both of them: its identity key (from the first
session) and its signing key (from the first bundle we used, or the caller's certified expectation).
A later `session_init` or bundle for the same device with another identity key, or a bundle with
the pinned identity key but another signing key (and so another signed prekey), is refused with
`IdentityMismatchError` unless the caller first calls `forget_peer`. Callers that know a device's
certified keys pass them as `expected_identity_key`/`expected_signing_key`; a bundle that differs
from them is refused outright (`InvalidBundleError`).

Group sender keys are bound to the caller's verified roster hash for their epoch. Received ones are
installed only through `install_sender_key`, after the caller's membership check. Methods that
depend on time (epoch retirement, skipped-key expiry) take `now` in seconds; nothing here reads a
clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from veil.client.protocol.codec import (
    b64encode,
    canonical_uuid,
    read_bytes,
    read_list,
    read_mapping,
    read_str,
    read_time,
)
from veil.client.protocol.envelope import DEVICE_CONTENT_TYPES, DeviceContext, GroupContext, Sealed
from veil.client.protocol.errors import (
    IdentityMismatchError,
    InvalidBundleError,
    MalformedMessageError,
    OwnMessageError,
    ReplayError,
    UnknownSessionError,
)
from veil.client.protocol.framing import SessionInitHeader, SessionMessageHeader
from veil.client.protocol.keys import DEFAULT_PQ_ONE_TIME_PREKEYS, KEY_SIZE, DeviceKeys
from veil.client.protocol.pairwise import PairwiseSession, PeerSessions, session_id_for
from veil.client.protocol.sender_keys import SenderKeyDistribution, SenderKeyStore
from veil.client.protocol.x3dh import PrekeyBundle

STATE_FORMAT = "veil-client-state"
STATE_VERSION = 3
# Version 2 held hash-ratchet sessions: such a state loads with its pairwise sessions dropped.
_SESSIONLESS_STATE_VERSION = 2
DEFAULT_EPOCH_GRACE_SECONDS = 3600.0
_SESSION_CONTENT_TYPES = frozenset({"session_message", "sender_key"})

_PeerId = tuple[str, str]


class ClientCrypto:
    """The cryptographic state and operations of one device (`device_id` is the auth session id)."""

    def __init__(
        self,
        user_id: str,
        device_id: str,
        keys: DeviceKeys,
        peers: dict[_PeerId, PeerSessions] | None = None,
        sender_keys: SenderKeyStore | None = None,
        *,
        signing_pins: dict[_PeerId, bytes] | None = None,
        epoch_grace_seconds: float = DEFAULT_EPOCH_GRACE_SECONDS,
    ) -> None:
        self.user_id = canonical_uuid(user_id, field="user_id")
        self.device_id = canonical_uuid(device_id, field="device_id")
        self.keys = keys
        self._peers = peers or {}
        # The signing key pinned per peer device (the identity key is pinned by its sessions).
        self._signing_pins = signing_pins or {}
        self._sender_keys = sender_keys or SenderKeyStore()
        self._sender_keys.epoch_grace_seconds = epoch_grace_seconds

    @classmethod
    def create(
        cls,
        user_id: str,
        device_id: str,
        *,
        one_time: int = 100,
        pq_one_time: int = DEFAULT_PQ_ONE_TIME_PREKEYS,
        epoch_grace_seconds: float = DEFAULT_EPOCH_GRACE_SECONDS,
    ) -> ClientCrypto:
        """A new device with fresh keys, `one_time` one-time prekeys, a PQ last-resort prekey and
        `pq_one_time` one-time PQ prekeys."""
        return cls(
            user_id,
            device_id,
            DeviceKeys.generate(one_time=one_time, pq_one_time=pq_one_time),
            epoch_grace_seconds=epoch_grace_seconds,
        )

    @property
    def epoch_grace_seconds(self) -> float:
        """How long after the first message of a newer epoch older epochs stay readable."""
        return self._sender_keys.epoch_grace_seconds

    # Keys ----------------------------------------------------------------------------------------

    def bundle(self, *, include_one_time: bool = True) -> dict[str, Any]:
        """The `PUT /v1/keys` body."""
        return self.keys.public_bundle(include_one_time=include_one_time)

    def add_one_time_prekeys(self, count: int) -> list[dict[str, Any]]:
        """New one-time prekeys: the list for `POST /v1/keys/one-time`."""
        return self.keys.add_one_time_prekeys(count)

    def add_pq_one_time_prekeys(self, count: int) -> list[dict[str, Any]]:
        """New one-time PQ prekeys: the `pq_one_time_prekeys` list for `POST /v1/keys/one-time`."""
        return self.keys.add_pq_one_time_prekeys(count)

    def rotate_prekeys_if_due(self, now: float) -> bool:
        """Replace the signed and PQ last-resort prekeys when a week old; True while replaced ones
        wait to be published (`bundle(include_one_time=False)`, then `prekeys_published`). See
        `DeviceKeys.rotate_prekeys_if_due`."""
        return self.keys.rotate_prekeys_if_due(now)

    def prekeys_published(self, now: float) -> None:
        self.keys.prekeys_published(now)

    def ensure_pq_last_resort_prekey(self) -> dict[str, Any] | None:
        """Make the PQ last-resort prekey a device from before PQXDH lacks; the new key (publish it
        with `PUT /v1/keys`, `bundle(include_one_time=False)`), or None if it had one."""
        return self.keys.ensure_pq_last_resort_prekey()

    def fingerprint(self) -> str:
        """This device's fingerprint, for comparison out of band."""
        return self.keys.fingerprint()

    # Pairwise sessions ---------------------------------------------------------------------------

    def has_session(self, peer_user_id: str, peer_device_id: str) -> bool:
        """Whether a message can be encrypted for this device without a new `session_init`."""
        peer = self._peers.get(_peer_id(peer_user_id, peer_device_id))
        return peer is not None and peer.has_live_session

    def peer_identity_key(self, peer_user_id: str, peer_device_id: str) -> bytes | None:
        """The identity key pinned for a peer device: the one its sessions with us authenticate
        (None before any session)."""
        peer = self._peers.get(_peer_id(peer_user_id, peer_device_id))
        return peer.pinned_identity_key if peer is not None else None

    def peer_signing_key(self, peer_user_id: str, peer_device_id: str) -> bytes | None:
        """The signing key pinned for a peer device (None until a bundle or expectation pinned one)."""
        return self._signing_pins.get(_peer_id(peer_user_id, peer_device_id))

    def forget_peer(self, peer_user_id: str, peer_device_id: str) -> None:
        """Drop every session with a peer device and its pinned identity and signing keys."""
        peer_id = _peer_id(peer_user_id, peer_device_id)
        self._peers.pop(peer_id, None)
        self._signing_pins.pop(peer_id, None)

    def start_session(
        self,
        peer_user_id: str,
        peer_device_id: str,
        claimed_bundle: Mapping[str, Any],
        plaintext: bytes = b"",
        *,
        expected_identity_key: bytes | None = None,
        expected_signing_key: bytes | None = None,
        require_post_quantum: bool = False,
    ) -> dict[str, Any]:
        """Run X3DH against a claim response; return the `session_init` device message carrying `plaintext`.

        A bundle with a `pq_prekey` gives a PQXDH set-up (frame type 4, `session_init_pq`), one
        without classical X3DH, unless `require_post_quantum` refuses it (a server that strips the
        PQ prekey must not downgrade the session); either way send it with `content_type:
        "session_init"`. Raises
        `InvalidBundleError` if the bundle is malformed, names another device, differs from the
        expected (certified) identity or signing key, or its signed prekey's or PQ prekey's
        signature does not verify; `IdentityMismatchError` if either key differs from the one
        pinned for this device.
        """
        bundle = PrekeyBundle.from_wire(claimed_bundle)
        if require_post_quantum and bundle.pq_prekey is None:
            raise InvalidBundleError("the bundle carries no post-quantum prekey")
        if bundle.device_id is not None and canonical_uuid(bundle.device_id) != canonical_uuid(
            peer_device_id
        ):
            raise InvalidBundleError("the bundle belongs to another device")
        if expected_identity_key is not None and bundle.identity_key != expected_identity_key:
            raise InvalidBundleError("the bundle's identity key is not the device's certified one")
        if expected_signing_key is not None and bundle.signing_key != expected_signing_key:
            raise InvalidBundleError("the bundle's signing key is not the device's certified one")
        peer_id = _peer_id(peer_user_id, peer_device_id)
        self._check_pins(peer_id, bundle.identity_key, bundle.signing_key)
        context = DeviceContext(peer_device_id, self.user_id, self.device_id, "session_init")
        session, sealed = PairwiseSession.initiate(self.keys, bundle, context, plaintext)
        self._peer(peer_id).add(session)
        self._signing_pins[peer_id] = bundle.signing_key
        return {"device_id": peer_device_id, **sealed.to_wire()}

    def accept_session(
        self,
        sender_user_id: str,
        sender_device_id: str,
        message: Mapping[str, Any],
        *,
        expected_identity_key: bytes | None = None,
        expected_signing_key: bytes | None = None,
        now: float | None = None,
    ) -> bytes:
        """Answer a `session_init` device message: establish the session and return its plaintext
        (`now` stamps the message keys its first message skipped, for their expiry).

        A second delivery of the same `session_init` raises `ReplayError`; an identity key other
        than the expected or pinned one raises `IdentityMismatchError`. The header carries no
        signing key, so `expected_signing_key` (the device's certified one) is only checked
        against the pin, and pinned if none was.
        """
        sealed = Sealed.from_wire(message)
        header = SessionInitHeader.decode(sealed.ciphertext)
        peer_id = _peer_id(sender_user_id, sender_device_id)
        peer = self._peers.get(peer_id)
        if peer is not None and peer.knows(session_id_for(header)):
            raise ReplayError("this session_init was already accepted")
        if expected_identity_key is not None and header.identity_key != expected_identity_key:
            raise IdentityMismatchError("the peer's identity key is not the expected one")
        self._check_pins(peer_id, header.identity_key, expected_signing_key)
        context = DeviceContext(self.device_id, sender_user_id, sender_device_id, "session_init")
        session, plaintext = PairwiseSession.accept(self.keys, header, sealed, context, now=now)
        self._peer(peer_id).add(session)
        if expected_signing_key is not None:
            self._signing_pins[peer_id] = expected_signing_key
        return plaintext

    def encrypt_for_device(
        self,
        peer_user_id: str,
        peer_device_id: str,
        plaintext: bytes,
        *,
        content_type: str = "session_message",
    ) -> dict[str, Any]:
        """A device message `{device_id, ciphertext, nonce, auth_tag}` on the established session.

        `content_type` (`session_message` or `sender_key`) must be the batch's content type: it is
        bound into the ciphertext.
        """
        if content_type not in _SESSION_CONTENT_TYPES:
            raise ValueError(f"content_type must be one of {sorted(_SESSION_CONTENT_TYPES)}")
        peer = self._peers.get(_peer_id(peer_user_id, peer_device_id))
        if peer is None:
            raise UnknownSessionError(f"no session with device {peer_device_id}: start one first")
        context = DeviceContext(peer_device_id, self.user_id, self.device_id, content_type)
        sealed = peer.active.encrypt(context, plaintext)
        return {"device_id": peer_device_id, **sealed.to_wire()}

    def decrypt_device_message(
        self,
        sender_user_id: str,
        sender_device_id: str,
        content_type: str,
        message: Mapping[str, Any],
        *,
        expected_identity_key: bytes | None = None,
        expected_signing_key: bytes | None = None,
        now: float | None = None,
    ) -> bytes:
        """Open any device message addressed to this device and return its plaintext (`now`, in
        seconds, ages the skipped message keys of the session: see `double_ratchet.SKIPPED_MAX_AGE`).

        `session_init` establishes a session (see `accept_session`, which the expectations are
        passed to). A `sender_key` message's plaintext is a distribution: it is NOT installed
        here; decode it with `SenderKeyDistribution.decode` and install it with
        `install_sender_key` once the sender's membership is checked.
        """
        if content_type == "session_init":
            return self.accept_session(
                sender_user_id,
                sender_device_id,
                message,
                expected_identity_key=expected_identity_key,
                expected_signing_key=expected_signing_key,
                now=now,
            )
        if content_type not in DEVICE_CONTENT_TYPES:
            raise MalformedMessageError(f"unknown device message content_type {content_type!r}")
        sealed = Sealed.from_wire(message)
        header = SessionMessageHeader.decode(sealed.ciphertext)
        peer = self._peers.get(_peer_id(sender_user_id, sender_device_id))
        if peer is None:
            raise UnknownSessionError(f"no session with device {sender_device_id}")
        session = peer.find(header.session_id)
        context = DeviceContext(self.device_id, sender_user_id, sender_device_id, content_type)
        plaintext = session.decrypt(sealed, context, now=now)
        peer.promote(session)
        return plaintext

    # Groups --------------------------------------------------------------------------------------

    def install_sender_key(
        self,
        sender_user_id: str,
        sender_device_id: str,
        distribution: SenderKeyDistribution,
        expected_roster_hash: bytes,
        *,
        now: float,
    ) -> bool:
        """Install a received sender key; True if new, False if it repeats one already held.

        Call it only for a sender in the verified roster of `distribution.epoch`, from a certified
        device, with that roster's hash: a key bound to another roster hash, or for a retired
        epoch, raises `SenderKeyRefusedError`.
        """
        return self._sender_keys.install(
            sender_user_id,
            sender_device_id,
            distribution,
            expected_roster_hash,
            now=now,
            own_user_id=self.user_id,
        )

    def current_sender_key_id(
        self,
        conversation_id: str,
        epoch: int,
        roster_hash: bytes,
        *,
        now: float,
        rotate_on_peer_key: bool = False,
    ) -> int:
        """The id of this device's sender key for the conversation epoch and roster, after making
        a new key if none exists or a rotation is due at `now` (see `sender_keys`).

        A different id than the one last distributed means every member device needs the new key
        (`sender_key_messages`) before the next group message. `rotate_on_peer_key=True` (direct
        conversations) also rotates once another user's key for the conversation was newly
        installed since this key was made (this user's other devices do not count).
        """
        return self._sender_keys.own_key(
            conversation_id, epoch, roster_hash, now=now, rotate_on_peer_key=rotate_on_peer_key
        ).key_id

    def group_sender_key_distribution(
        self,
        conversation_id: str,
        epoch: int,
        roster_hash: bytes,
        *,
        now: float,
        rotate_on_peer_key: bool = False,
    ) -> bytes:
        """The sender-key payload of the current key (rotated first if due, as in
        `current_sender_key_id`).

        Send it to every other member device with `encrypt_for_device(..., content_type=
        "sender_key")` (or use `sender_key_messages`) before the next group message.
        """
        key = self._sender_keys.own_key(
            conversation_id, epoch, roster_hash, now=now, rotate_on_peer_key=rotate_on_peer_key
        )
        return key.distribution().encode()

    def sender_key_messages(
        self,
        conversation_id: str,
        epoch: int,
        roster_hash: bytes,
        devices: Iterable[tuple[str, str]],
        *,
        now: float,
        rotate_on_peer_key: bool = False,
    ) -> list[dict[str, Any]]:
        """`sender_key` device messages of the current key (rotated first if due) for every
        `(user_id, device_id)` given, this device skipped.

        Each device needs an established session (`UnknownSessionError` otherwise).
        """
        payload = self.group_sender_key_distribution(
            conversation_id, epoch, roster_hash, now=now, rotate_on_peer_key=rotate_on_peer_key
        )
        return [
            self.encrypt_for_device(user_id, device_id, payload, content_type="sender_key")
            for user_id, device_id in devices
            if canonical_uuid(device_id) != self.device_id
        ]

    def encrypt_group_message(
        self,
        conversation_id: str,
        epoch: int,
        message_id: str,
        content_type: str,
        plaintext: bytes,
        *,
        roster_hash: bytes,
        now: float,
        parent_id: str | None = None,
    ) -> dict[str, Any]:
        """The `POST /v1/conversations/{id}/messages` envelope, sent by this user and device.

        The sender key for the epoch and roster must exist (`group_sender_key_distribution`), so
        that no message goes out under a key nobody else was given (`UnknownSenderKeyError`).
        It is never rotated here, even when due: rotation happens where keys are distributed.
        """
        context = GroupContext(
            conversation_id,
            message_id,
            self.user_id,
            self.device_id,
            content_type,
            epoch,
            roster_hash,
            parent_id,
        )
        sealed = self._sender_keys.encrypt(context, plaintext, now=now)
        envelope: dict[str, Any] = {
            "message_id": message_id,
            **sealed.to_wire(),
            "content_type": content_type,
            "key_epoch": epoch,
        }
        if parent_id is not None:
            envelope["parent_id"] = parent_id
        return envelope

    def decrypt_group_message(self, envelope: Mapping[str, Any], roster_hash: bytes, *, now: float) -> bytes:
        """Open a stored envelope as the server returns it (with conversation and sender ids).

        `roster_hash` is the caller's verified roster hash at the envelope's `key_epoch`. Callers
        de-duplicate by `message_id` first: a second decryption is a `ReplayError`. This device's
        own messages raise `OwnMessageError` (their keys were deleted when sent); a retired epoch
        or a missing key raises `UnknownSenderKeyError`.
        """
        try:
            context = GroupContext.from_envelope(envelope, roster_hash)
            own = canonical_uuid(context.sender_device_id) == self.device_id
        except ValueError as error:
            raise MalformedMessageError(str(error)) from None
        if own:
            raise OwnMessageError("this device sent the message; keep its plaintext when sending")
        sealed = Sealed.from_wire(envelope)
        return self._sender_keys.decrypt(context, sealed, now=now)

    def expire_keys(self, *, now: float) -> None:
        """Apply due epoch retirements and drop too-old skipped message keys everywhere: sender
        keys and pairwise sessions.

        Decryption does this for its own conversation or session; call this now and then (at
        start-up, after a sync) so that conversations and sessions that fell silent are cleaned too.
        """
        self._sender_keys.expire(now)
        for peer in self._peers.values():
            peer.expire(now)

    def forget_epochs_before(self, conversation_id: str, epoch: int) -> None:
        """Delete sender keys of earlier epochs: their history becomes unreadable on this device."""
        self._sender_keys.forget_epochs_before(conversation_id, epoch)

    # State ---------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything this device must keep, as a JSON-serialisable object (secret: store encrypted)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "keys": self.keys.to_state(),
            "peers": [peer.to_state() for peer in self._peers.values()],
            "signing_pins": [
                {"user_id": user_id, "device_id": device_id, "signing_key": b64encode(key)}
                for (user_id, device_id), key in self._signing_pins.items()
            ],
            "sender_keys": self._sender_keys.to_state(),
            "epoch_grace_seconds": self.epoch_grace_seconds,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ClientCrypto:
        """Rebuild from `to_state` output; raises `ValueError` on anything malformed."""
        version = state.get("version")
        supported = (STATE_VERSION, _SESSIONLESS_STATE_VERSION)
        if state.get("format") != STATE_FORMAT or version not in supported:
            raise ValueError("not a Veil client state of a supported version")
        peers: dict[_PeerId, PeerSessions] = {}
        for item in read_list(state, "peers"):
            if not isinstance(item, Mapping):
                raise ValueError("a peer entry must be an object")
            # A version 2 peer keeps its identity pin; the next send starts a Double Ratchet session.
            if version == STATE_VERSION:
                peer = PeerSessions.from_state(item)
            else:
                peer = PeerSessions.pin_from_version_2(item)
            peers[_peer_id(peer.user_id, peer.device_id)] = peer
        signing_pins: dict[_PeerId, bytes] = {}
        for item in read_list(state, "signing_pins"):
            if not isinstance(item, Mapping):
                raise ValueError("a signing pin entry must be an object")
            peer_id = _peer_id(read_str(item, "user_id"), read_str(item, "device_id"))
            signing_pins[peer_id] = read_bytes(item, "signing_key", size=KEY_SIZE)
        grace = read_time(state, "epoch_grace_seconds")
        return cls(
            read_str(state, "user_id"),
            read_str(state, "device_id"),
            DeviceKeys.from_state(read_mapping(state, "keys")),
            peers,
            SenderKeyStore.from_state(
                read_mapping(state, "sender_keys"),
                epoch_grace_seconds=grace,
                # A version 2 store's keys have no key ids: only its epoch retirements are kept.
                legacy=version == _SESSIONLESS_STATE_VERSION,
            ),
            signing_pins=signing_pins,
            epoch_grace_seconds=grace,
        )

    # Internals -----------------------------------------------------------------------------------

    def _peer(self, peer_id: _PeerId) -> PeerSessions:
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = PeerSessions(*peer_id)
        return peer

    def _check_pins(self, peer_id: _PeerId, identity_key: bytes, signing_key: bytes | None) -> None:
        """Refuse keys other than those pinned for this peer device (both keys are one identity)."""
        peer = self._peers.get(peer_id)
        pinned = peer.pinned_identity_key if peer is not None else None
        if pinned is not None and identity_key != pinned:
            raise IdentityMismatchError(
                "the peer device's identity key changed; verify it and call forget_peer to accept it"
            )
        pinned_signing = self._signing_pins.get(peer_id)
        if signing_key is not None and pinned_signing is not None and signing_key != pinned_signing:
            raise IdentityMismatchError(
                "the peer device's signing key changed while its identity key did not: a mixed bundle"
            )


def _peer_id(user_id: str, device_id: str) -> _PeerId:
    return canonical_uuid(user_id, field="user_id"), canonical_uuid(device_id, field="device_id")
