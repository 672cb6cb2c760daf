"""Keys use cases: publish and top up keys, look up and claim bundles, queue and read device
messages. The server checks shapes and signatures; it never holds or accepts a private key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil.core.binary import looks_like_text
from veil.core.clock import Clock
from veil.core.db import Connection, Database
from veil.core.logging import get_logger
from veil.core.problems import FieldError, Problem, conflict, not_found, too_many_requests, validation_failed
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key, messaging_budget_key
from veil.keys import pq_store, store
from veil.keys.pq_prekeys import MAX_PQ_ONE_TIME_PREKEYS, ClaimedPqPrekey, PqPrekey, check_pq_prekeys

log = get_logger(__name__)

_ALL_ZERO = bytes(32)
# The owner is told to upload more (`prekeys_low`) below `KeysLimits.low_prekeys` unclaimed
# one-time prekeys, and never below this many.
LOW_PREKEYS = 10
# One-time ML-KEM prekeys are large (1,184 bytes), so devices keep fewer (the reference client 20):
# below this many the owner is told, as for the classical ones.
LOW_PQ_PREKEYS = 10
# Retry-After for a sender whose envelopes fill its share of a queue: it frees up only as the
# recipient device acknowledges, which the sender cannot see.
_QUEUE_RETRY_SECONDS = 60


@dataclass(frozen=True)
class KeysLimits:
    max_devices_per_user: int
    max_one_time_prekeys: int
    # Claims per (claimer, target device): one claimer's 429.
    claims_per_target_device: Rate
    # One-time prekeys one device hands out, across all claimers; past it, signed prekey only.
    one_time_prekeys_per_device: Rate
    # Notify the owner below this many unclaimed one-time prekeys.
    low_prekeys: int
    # Envelopes (not requests) per sender user, across all recipients.
    envelopes_per_sender: Rate
    # Unacknowledged envelopes per (sender user, recipient device).
    device_queue_per_sender: int
    # Safety cap on one device's whole queue.
    device_queue_cap: int
    device_message_ttl: timedelta
    max_ciphertext_bytes: int
    # The user's messaging budget, shared with message sends (same limiter key).
    sends_per_user: Rate


@dataclass(frozen=True)
class PublishedKeys:
    identity_key: bytes
    signing_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signature: bytes
    one_time_prekeys: list[tuple[int, bytes]]
    # None keeps the device's current last-resort PQ prekey.
    pq_last_resort_prekey: PqPrekey | None = None
    pq_one_time_prekeys: list[PqPrekey] = field(default_factory=list)


@dataclass(frozen=True)
class NewOneTimePrekeys:
    classical: list[tuple[int, bytes]]
    post_quantum: list[PqPrekey]


@dataclass(frozen=True)
class PrekeysLeft:
    """Unclaimed one-time prekeys of a device, classical and post-quantum."""

    classical: int
    post_quantum: int


@dataclass(frozen=True)
class Bundle:
    device: store.DeviceRecord
    one_time_prekey: tuple[int, bytes] | None
    pq_prekey: ClaimedPqPrekey | None = None


@dataclass(frozen=True)
class Directory:
    master_key: bytes | None
    devices: list[store.DeviceRecord]


@dataclass(frozen=True)
class DeviceEnvelope:
    device_id: uuid.UUID
    ciphertext: bytes
    nonce: bytes
    auth_tag: bytes


@dataclass(frozen=True)
class Inbox:
    messages: list[store.QueuedMessage]
    gap: store.GapRecord | None


def _queue_full(detail: str) -> Problem:
    return Problem(429, detail, headers={"Retry-After": str(_QUEUE_RETRY_SECONDS)})


def _invalid(loc: tuple[str | int, ...], msg: str) -> Problem:
    return validation_failed([FieldError(loc, msg)])


def check_signed_prekey(signing_key: bytes, signed_prekey: bytes, signature: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(signing_key).verify(signature, signed_prekey)
    except (InvalidSignature, ValueError):
        raise _invalid(
            ("signed_prekey", "signature"), "Not a valid Ed25519 signature of the signed prekey."
        ) from None


def check_public_keys(keys: PublishedKeys) -> None:
    named = [("identity_key",), ("signing_key",), ("signed_prekey", "public_key")]
    values = [keys.identity_key, keys.signing_key, keys.signed_prekey]
    for loc, value in zip(named, values, strict=True):
        if value == _ALL_ZERO:
            raise _invalid(loc, "Not a usable public key.")
    check_one_time_prekeys(keys.one_time_prekeys)


def check_one_time_prekeys(keys: list[tuple[int, bytes]]) -> None:
    seen: set[int] = set()
    for index, (key_id, public) in enumerate(keys):
        if public == _ALL_ZERO:
            raise _invalid(("one_time_prekeys", index, "public_key"), "Not a usable public key.")
        if key_id in seen:
            raise _invalid(("one_time_prekeys", index, "key_id"), "Duplicate key_id in the request.")
        seen.add(key_id)


class KeysService:
    def __init__(self, db: Database, limiter: RateLimiter, clock: Clock, limits: KeysLimits) -> None:
        self._db = db
        self._limiter = limiter
        self._clock = clock
        self._limits = limits

    async def publish(self, principal: Principal, keys: PublishedKeys) -> PrekeysLeft:
        """Publish or replace the device's keys and add one-time prekeys, all or nothing. PQ
        prekeys must be signed by the request's signing key; a new signing key drops the PQ
        prekeys the old one signed (claimers would refuse them), keeping those of this request."""
        check_public_keys(keys)
        check_signed_prekey(keys.signing_key, keys.signed_prekey, keys.signature)
        check_pq_prekeys(keys.signing_key, keys.pq_last_resort_prekey, keys.pq_one_time_prekeys)
        now = self._clock.now()
        record = store.DeviceRecord(
            principal.session_id,
            keys.identity_key,
            keys.signing_key,
            keys.signed_prekey_id,
            keys.signed_prekey,
            keys.signature,
        )
        async with self._db.transaction("keys_publish") as conn:
            await store.lock_user_devices(conn, principal.user_id)
            previous = await store.device(conn, principal.session_id)
            if previous is None and await store.count_devices(conn, principal.user_id) >= (
                self._limits.max_devices_per_user
            ):
                raise conflict(
                    f"This account already has {self._limits.max_devices_per_user} devices with keys;"
                    " end a session first."
                )
            await store.upsert_device(conn, principal.user_id, record, now)
            for change in _changes(previous, record):
                await store.record_key_change(conn, principal.user_id, principal.session_id, change, now)
            if _needs_approval(previous, record):
                await store.notify_device_pending(conn, principal.user_id, principal.session_id)
            if previous is not None and previous.signing_key != record.signing_key:
                await pq_store.forget_device_keys(conn, principal.session_id)
            if keys.pq_last_resort_prekey is not None:
                await pq_store.set_last_resort(conn, principal.session_id, keys.pq_last_resort_prekey, now)
            await self._add_prekeys(conn, principal.session_id, keys.one_time_prekeys, now)
            await self._add_pq_prekeys(conn, principal.session_id, keys.pq_one_time_prekeys, now)
            return await _prekeys_left(conn, principal.session_id)

    async def add_one_time_prekeys(self, principal: Principal, keys: NewOneTimePrekeys) -> PrekeysLeft:
        """Add one-time prekeys, all or nothing; PQ ones must be signed by the device's current
        signing key."""
        check_one_time_prekeys(keys.classical)
        now = self._clock.now()
        async with self._db.transaction("keys_add_one_time") as conn:
            if keys.post_quantum:
                # Serialised with PUT /v1/keys (same lock): the signing key read here stays the
                # device's until commit, so no key signed by a replaced one is stored.
                await store.lock_user_devices(conn, principal.user_id)
            device = await store.device(conn, principal.session_id)
            if device is None:
                raise conflict("Publish this device's keys (PUT /v1/keys) first.")
            check_pq_prekeys(device.signing_key, None, keys.post_quantum)
            await self._add_prekeys(conn, principal.session_id, keys.classical, now)
            await self._add_pq_prekeys(conn, principal.session_id, keys.post_quantum, now)
            return await _prekeys_left(conn, principal.session_id)

    async def _add_prekeys(
        self, conn: Connection, device_id: uuid.UUID, keys: list[tuple[int, bytes]], now: datetime
    ) -> None:
        conflicts = await store.add_one_time_prekeys(conn, device_id, keys, now)
        if conflicts:
            raise conflict(
                "A one-time prekey with this key_id was already uploaded with other bytes.",
                key_ids=sorted(conflicts),
            )
        if await store.remaining_prekeys(conn, device_id) > self._limits.max_one_time_prekeys:
            raise _invalid(
                ("one_time_prekeys",),
                f"At most {self._limits.max_one_time_prekeys} unclaimed one-time prekeys per device.",
            )

    async def _add_pq_prekeys(
        self, conn: Connection, device_id: uuid.UUID, keys: list[PqPrekey], now: datetime
    ) -> None:
        conflicts = await pq_store.add_one_time(conn, device_id, keys, now)
        if conflicts:
            raise conflict(
                "A one-time PQ prekey with this key_id is already held with other bytes.",
                key_ids=sorted(conflicts),
            )
        if await pq_store.remaining_one_time(conn, device_id) > MAX_PQ_ONE_TIME_PREKEYS:
            raise _invalid(
                ("pq_one_time_prekeys",),
                f"At most {MAX_PQ_ONE_TIME_PREKEYS} unclaimed one-time PQ prekeys per device.",
            )

    async def remaining(self, principal: Principal) -> PrekeysLeft:
        async with self._db.transaction("keys_count", isolation="repeatable_read") as conn:
            return await _prekeys_left(conn, principal.session_id)

    async def devices(self, user_id: uuid.UUID) -> Directory:
        """A user's devices with their certificates, and the master key that made them, read in
        one snapshot: a reset in between never pairs the new key with the old certificates."""
        async with self._db.transaction("keys_devices", isolation="repeatable_read") as conn:
            if not await store.user_is_active(conn, user_id):
                raise not_found("No such user.")
            master = await store.master_key(conn, user_id)
            devices = await store.devices_of(conn, user_id)
        return Directory(master.master_key if master else None, devices)

    async def claim(self, principal: Principal, user_id: uuid.UUID, device_id: uuid.UUID) -> Bundle:
        """A device's bundle, with one of its one-time prekeys while the device's hourly budget
        lasts. One claimer is limited per target device (429); all claimers together take at most
        `one_time_prekeys_per_device` keys, after which a claim still succeeds with the signed
        prekey alone (one_time_prekey null, as Signal falls back), so strangers cannot drain the
        stock. The owner is told early (`prekeys_low`), while at the budget's full rate an hour's
        worth of keys is still left to replenish in."""
        now = self._clock.now()
        decision = await self._limiter.hit(
            limiter_key("claim", f"{principal.user_id}:{device_id}"),
            self._limits.claims_per_target_device,
            now.timestamp(),
        )
        if not decision.allowed:
            raise too_many_requests(decision.retry_after_seconds)
        budget = await self._limiter.hit(
            limiter_key("one-time-prekeys", str(device_id)),
            self._limits.one_time_prekeys_per_device,
            now.timestamp(),
        )
        one_time = None
        async with self._db.transaction("keys_claim") as conn:
            device = await store.device(conn, device_id, owner=user_id)
            if device is None:
                raise not_found("No such device.")
            # The budget counts bundles: one claim may take a classical and a PQ one-time key.
            pq_prekey = await pq_store.claim(conn, device_id, one_time_allowed=budget.allowed)
            if budget.allowed:
                one_time = await store.claim_one_time_prekey(conn, device_id, now)
            # The owner hears `prekeys_low` when either stock runs low (it tops both up), and on
            # every claim that found one of them empty: a device that ran out, or whose keys a
            # restore retired (veil.keys.restored), is told at once rather than never.
            pq_low = (
                pq_prekey is not None
                and not pq_prekey.last_resort
                and await pq_store.remaining_one_time(conn, device_id) < LOW_PQ_PREKEYS
            )
            ran_out = budget.allowed and (
                one_time is None or (pq_prekey is not None and pq_prekey.last_resort)
            )
            if one_time is not None or pq_low or ran_out:
                remaining = await store.remaining_prekeys(conn, device_id)
                if remaining < self._limits.low_prekeys or pq_low or ran_out:
                    await store.notify_prekeys_low(conn, device_id, remaining)
        if not budget.allowed:
            log.info("one_time_prekey_budget_spent", device_id=str(device_id))
        elif one_time is None:
            log.info("one_time_prekeys_exhausted", device_id=str(device_id))
        return Bundle(device, one_time, pq_prekey)

    async def send(self, principal: Principal, content_type: str, envelopes: list[DeviceEnvelope]) -> int:
        """Queue envelopes for recipient devices; all or nothing.

        Each envelope counts against the sender's envelope budget (a request of 100 weighs 100),
        and a sender may hold at most `device_queue_per_sender` unacknowledged envelopes in any
        one device's queue: a flooder gets 429 for that device while every other sender still
        gets through. Envelopes for the devices of someone who blocked the sender are accepted
        and dropped, so the answer is the same as if they were queued: that includes the share,
        which for such a device counts the dropped envelopes instead (`_take_dropped_share`), so a
        blocked sender gets its 429 after as many envelopes as one whose envelopes wait unread."""
        for index, envelope in enumerate(envelopes):
            if len(envelope.ciphertext) > self._limits.max_ciphertext_bytes:
                raise Problem(
                    413, f"A ciphertext exceeds {self._limits.max_ciphertext_bytes} bytes (message {index})."
                )
            if looks_like_text(envelope.ciphertext):
                raise _invalid(("messages", index, "ciphertext"), "Looks like plaintext, not ciphertext.")
        now = self._clock.now()
        budgets = (
            (messaging_budget_key(principal.user_id), self._limits.sends_per_user, 1),
            (_envelope_budget_key(principal.user_id), self._limits.envelopes_per_sender, len(envelopes)),
        )
        for key, rate, cost in budgets:
            decision = await self._limiter.hit(key, rate, now.timestamp(), cost)
            if not decision.allowed:
                raise too_many_requests(decision.retry_after_seconds)
        incoming: dict[uuid.UUID, int] = {}
        for envelope in envelopes:
            incoming[envelope.device_id] = incoming.get(envelope.device_id, 0) + 1
        recipients = sorted(incoming)
        async with self._db.connection() as conn:
            known = await store.existing_devices(conn, recipients)
            if missing := [d for d in recipients if d not in known]:
                raise not_found(f"No such device: {missing[0]}.")
            blocking = await store.blocking_devices(conn, recipients, principal.user_id)
        taken, refused = await self._take_dropped_share(
            principal.user_id, {d: incoming[d] for d in sorted(blocking)}, now.timestamp()
        )
        try:
            await self._enqueue(principal, content_type, envelopes, incoming, now, refused)
        except Problem:
            # Nothing was queued: the dropped envelopes are not counted either, as a refused
            # request holds no place in a share.
            await self._give_back_dropped_share(principal.user_id, taken, now.timestamp())
            raise
        return len(envelopes)

    def _dropped_share_rate(self) -> Rate:
        # As many as the share holds, freed over the time a queued envelope would expire in.
        share = self._limits.device_queue_per_sender
        return Rate(share / self._limits.device_message_ttl.total_seconds(), share)

    async def _take_dropped_share(
        self, sender: uuid.UUID, counts: dict[uuid.UUID, int], now: float
    ) -> tuple[dict[uuid.UUID, int], tuple[uuid.UUID, int] | None]:
        """Count envelopes for a blocker's devices against the sender's share of each, as if they
        waited in its queue unacknowledged: a blocked sender must not learn of the block by never
        meeting that limit. Returns what was taken, or nothing and the first device whose share
        is full with what it holds: `_enqueue` refuses that device with the very 429 of a full
        share, at its place in device order (so which device a 429 names tells nothing either)."""
        rate, share = self._dropped_share_rate(), self._limits.device_queue_per_sender
        taken: dict[uuid.UUID, int] = {}
        for device, count in counts.items():
            decision = await self._limiter.hit(_dropped_share_key(sender, device), rate, now, count)
            if not decision.allowed:
                await self._give_back_dropped_share(sender, taken, now)
                held = min(share, max(0, round(share - count + decision.retry_after / rate.interval)))
                return {}, (device, held)
            taken[device] = count
        return taken, None

    async def _give_back_dropped_share(
        self, sender: uuid.UUID, taken: dict[uuid.UUID, int], now: float
    ) -> None:
        rate = self._dropped_share_rate()
        for device, count in taken.items():
            await self._limiter.refund(_dropped_share_key(sender, device), rate, now, count)

    async def _enqueue(
        self,
        principal: Principal,
        content_type: str,
        envelopes: list[DeviceEnvelope],
        incoming: dict[uuid.UUID, int],
        now: datetime,
        refused: tuple[uuid.UUID, int] | None,
    ) -> None:
        share = self._limits.device_queue_per_sender
        recipients = sorted(incoming)
        async with self._db.transaction("keys_send_device_messages") as conn:
            await store.lock_devices(conn, recipients)
            known = await store.existing_devices(conn, recipients)
            missing = [d for d in recipients if d not in known]
            if missing:
                raise not_found(f"No such device: {missing[0]}.")
            usage = await store.queue_usage(conn, recipients, principal.user_id, now)
            for device, count in incoming.items():
                held = usage.get(device, store.QueueUsage(0, 0))
                if refused is not None and refused[0] == device:  # a blocker's device
                    log.info("device_queue_sender_share_full", recipient_device_id=str(device))
                    raise _share_full(device, refused[1], share)
                if held.from_sender + count > share:
                    log.info("device_queue_sender_share_full", recipient_device_id=str(device))
                    raise _share_full(device, held.from_sender, share)
                if held.total + count > self._limits.device_queue_cap:
                    log.warning("device_queue_full", recipient_device_id=str(device))
                    raise _queue_full(f"Device {device} has too many queued envelopes; retry later.")
            await store.enqueue(
                conn,
                [(e.device_id, e.ciphertext, e.nonce, e.auth_tag) for e in envelopes],
                sender_user_id=principal.user_id,
                sender_device_id=principal.session_id,
                content_type=content_type,
                now=now,
                expires_at=now + self._limits.device_message_ttl,
            )

    async def inbox(self, principal: Principal, after_id: int, limit: int) -> Inbox:
        """The caller's queued device messages. Expired ones are dropped first and reported once
        as a gap, so the device learns that something never arrived."""
        now = self._clock.now()
        async with self._db.transaction("keys_inbox") as conn:
            await store.expire_queued(conn, principal.session_id, now)
            gap = await store.gap_of(conn, principal.session_id)
            if gap is not None:
                await store.clear_gap(conn, principal.session_id)
            messages = await store.queued_for(conn, principal.session_id, after_id, limit)
        return Inbox(messages, gap)

    async def acknowledge(self, principal: Principal, message_id: int) -> None:
        async with self._db.transaction("keys_ack_device_message") as conn:
            if not await store.acknowledge(conn, principal.session_id, message_id):
                raise not_found("No such device message.")

    async def acknowledge_many(
        self, principal: Principal, *, up_to_id: int | None = None, ids: list[int] | None = None
    ) -> int:
        """Remove the caller device's envelopes up to an id, or those of a list of ids, in one
        statement. Only the caller's own queue is touched: ids of other devices' envelopes, and
        ids already gone, are ignored. Returns how many were removed."""
        async with self._db.transaction("keys_ack_device_messages") as conn:
            if up_to_id is not None:
                return await store.acknowledge_up_to(conn, principal.session_id, up_to_id)
            return await store.acknowledge_ids(conn, principal.session_id, ids or [])


async def _prekeys_left(conn: Connection, device_id: uuid.UUID) -> PrekeysLeft:
    return PrekeysLeft(
        await store.remaining_prekeys(conn, device_id), await pq_store.remaining_one_time(conn, device_id)
    )


def _envelope_budget_key(user_id: uuid.UUID) -> str:
    return limiter_key("device-envelopes", str(user_id))


def _dropped_share_key(sender: uuid.UUID, device: uuid.UUID) -> str:
    return limiter_key("device-share-dropped", f"{sender}|{device}")


def _share_full(device: uuid.UUID, held: int, share: int) -> Problem:
    return _queue_full(
        f"Device {device} holds {held} unacknowledged envelopes of yours; at most {share} until it"
        " acknowledges some."
    )


def _needs_approval(previous: store.DeviceRecord | None, current: store.DeviceRecord) -> bool:
    """A new device, or one whose identity or signing key changed (which ends its certificate):
    one of the user's other devices must approve these keys, so they are told (`device_pending`)
    once per publish, however many of the certified keys changed."""
    return previous is None or (previous.identity_key, previous.signing_key) != (
        current.identity_key,
        current.signing_key,
    )


def _changes(previous: store.DeviceRecord | None, current: store.DeviceRecord) -> list[str]:
    if previous is None:
        return ["device_added"]
    changes = []
    if previous.identity_key != current.identity_key:
        changes.append("identity_changed")
    if previous.signing_key != current.signing_key:
        changes.append("signing_key_changed")  # with the identity key, it ends the certificate
    if (previous.signed_prekey_id, previous.signed_prekey) != (
        current.signed_prekey_id,
        current.signed_prekey,
    ):
        changes.append("signed_prekey_changed")
    return changes
