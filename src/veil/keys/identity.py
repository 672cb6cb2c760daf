"""Master keys and device certificates: the user's own word on which devices are theirs.

Each user has one master key (an Ed25519 public key made on the user's first device). It signs a
certificate for each device, over the bytes `certificate_payload` builds; clients send only to
certified devices of users whose master key they pinned, so a device the server adds (or a login
with a stolen password) receives nothing until one of the user's devices approves it.

The server checks what it can without any private key: a certificate must verify under the
user's *current* master key and cover the device's current identity and signing keys. It is kept
on the device's key row, so it goes when those keys change (see `store.upsert_device`) or the
session ends, and every certificate goes when the master key is reset.

A reset is for a user who lost every device that held the master key. It proves the password
again, like a password change (veil.account.password): every attempt takes a slot of the same
per-user budget before the Argon2 check, and a wrong password is 403. It then replaces the key, drops every
certificate and tells everyone who shares a conversation with the user (`identity_changed`). A reset
by a user who never had a master key sets the first one, as `PUT /v1/identity` would: nothing
changed for anyone, so nobody is told.
"""

from __future__ import annotations

import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil.client.protocol.identity import is_acceptable_master_key
from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.logging import get_logger
from veil.core.problems import (
    FieldError,
    Problem,
    conflict,
    forbidden,
    not_found,
    too_many_requests,
    unavailable,
    validation_failed,
)
from veil.core.security.authn import Principal
from veil.core.security.passwords import Overloaded, Passwords
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key
from veil.keys import store

log = get_logger("veil.security")

CERTIFICATE_CONTEXT = b"veil/device-certificate/v1"
WRONG_PASSWORD = "The password is wrong."  # noqa: S105 - a message, not a password


def certificate_payload(user_id: uuid.UUID, device: store.DeviceRecord) -> bytes:
    """What a device certificate signs: the context, the user and device ids (16 raw bytes each),
    then the device's identity and signing keys (32 raw bytes each)."""
    return (
        CERTIFICATE_CONTEXT
        + user_id.bytes
        + device.device_id.bytes
        + device.identity_key
        + device.signing_key
    )


def check_master_key(key: bytes) -> None:
    """Refuse a small-order or non-canonical Ed25519 encoding (422): one key with two spellings,
    or one that a crafted signature verifies under for many messages, is no one's word."""
    # The server reuses the client's pure check (no I/O in it): one definition of an acceptable
    # master key, so the server never stores a key every client would then refuse to pin.
    if not is_acceptable_master_key(key):
        raise validation_failed(
            [FieldError(("master_key",), "Not a usable Ed25519 public key (small order or non-canonical).")]
        )


def _bad_certificate(msg: str) -> Problem:
    return validation_failed([FieldError(("signature",), msg)])


def password_check_key(user_id: object) -> str:
    """The per-user budget of password re-checks, the same key a password change takes its slots
    from (veil.account.password): a token holder gets one budget of guesses, not one per door,
    and the purge of an account removes it with the others."""
    return limiter_key("password-change", str(user_id))


class IdentityService:
    def __init__(
        self, db: Database, passwords: Passwords, limiter: RateLimiter, clock: Clock, resets: Rate
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._limiter = limiter
        self._clock = clock
        self._resets = resets

    async def set_master_key(self, principal: Principal, key: bytes) -> tuple[bool, store.MasterKey]:
        """Set the caller's master key once; (True, it) if it was set now, (False, it) if that
        very key was set already (a retry). Another key already set is a 409: only a reset
        replaces it."""
        check_master_key(key)
        async with self._db.transaction("identity_set") as conn:
            inserted = await store.insert_master_key(conn, principal.user_id, key, self._clock.now())
            if inserted is not None:
                log.info("security_event", kind="master_key_set", user_id=str(principal.user_id))
                return True, inserted
            current = await store.master_key(conn, principal.user_id)
        if current is None or current.master_key != key:
            raise conflict("A different master key is already set; only a reset replaces it.")
        return False, current

    async def master_key(self, user_id: uuid.UUID) -> store.MasterKey:
        async with self._db.connection() as conn:
            found = await store.active_master_key(conn, user_id)
        if found is None:
            raise not_found("This user has no master key.")
        return found

    async def reset(self, principal: Principal, password: str, key: bytes) -> store.MasterKey:
        """Replace the caller's master key once the password is proven again (403 if wrong).
        Contacts hear `identity_changed` only if a different key was replaced; for a user who
        never had one it is a first set, as `PUT /v1/identity` would do (the password is still
        required), and the key already set is a retry that changes nothing."""
        check_master_key(key)
        now = self._clock.now()
        verdict = await self._limiter.hit(
            password_check_key(principal.user_id), self._resets, now.timestamp()
        )
        if not verdict.allowed:
            log.warning("security_event", kind="rate_limited", scope="identity_reset")
            raise too_many_requests(verdict.retry_after_seconds)
        async with self._db.connection() as conn:
            checked = await store.password_hash(conn, principal.user_id)
        if checked is None:
            raise not_found("No such account.")
        if not await self._verify(checked, password):
            log.warning(
                "security_event", kind="identity_reset_wrong_password", user_id=str(principal.user_id)
            )
            raise forbidden(WRONG_PASSWORD)
        async with self._db.transaction("identity_reset") as conn:
            if await store.password_hash(conn, principal.user_id, lock=True) != checked:
                raise forbidden(WRONG_PASSWORD)  # changed meanwhile: what was checked is no longer it
            first = await store.insert_master_key(conn, principal.user_id, key, now)
            if first is not None:
                log.info("security_event", kind="master_key_set", user_id=str(principal.user_id))
                return first
            replaced = await store.replace_master_key(conn, principal.user_id, key, now)
        log.info("security_event", kind="master_key_reset", user_id=str(principal.user_id))
        return replaced

    async def certify(self, principal: Principal, device_id: uuid.UUID, signature: bytes) -> None:
        """Store the master key's certificate of one of the caller's own devices. The master key
        and the device's keys are locked while the signature is checked, so a reset or a key
        change cannot slip in between and leave a certificate by an old key, or of old keys."""
        now = self._clock.now()
        async with self._db.transaction("identity_certify") as conn:
            master = await store.master_key(conn, principal.user_id, lock=True)
            device = await store.lock_own_device(conn, device_id, principal.user_id)
            if device is None:
                raise not_found("No such device with published keys.")
            if master is None:
                raise _bad_certificate("No master key is set (PUT /v1/identity first).")
            try:
                public = Ed25519PublicKey.from_public_bytes(master.master_key)
                public.verify(signature, certificate_payload(principal.user_id, device))
            except (InvalidSignature, ValueError):
                raise _bad_certificate(
                    "Not a valid signature by the current master key over this device's keys."
                ) from None
            if device.certificate == signature:
                return
            await store.set_certificate(conn, device_id, signature)
            await store.record_key_change(conn, principal.user_id, device_id, "device_certified", now)

    async def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return await self._passwords.verify(stored_hash, password)
        except Overloaded:
            raise unavailable("Too many password checks are in progress; retry shortly.") from None
