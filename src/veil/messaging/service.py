"""Messaging use cases. Every read and write goes through `_access`, the one place that decides
whether the caller may see a conversation: a non-member gets the same 404 as a missing id."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from veil.blocks import is_blocked
from veil.core.binary import looks_like_text
from veil.core.clock import Clock
from veil.core.db import Connection, Database
from veil.core.metrics import Metrics
from veil.core.problems import (
    FieldError,
    Problem,
    conflict,
    forbidden,
    not_found,
    too_many_requests,
    validation_failed,
)
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key, messaging_budget_key
from veil.messaging import store

_MANAGERS = ("owner", "admin")
# What a 429 for too many pending invitations suggests: the bound frees when the invitee answers,
# which no timer predicts, so the hint is a polite interval rather than a promise.
_PENDING_RETRY_SECONDS = 3600


@dataclass(frozen=True)
class MessagingLimits:
    sends_per_user: Rate
    max_ciphertext_bytes: int
    # Writes that put something into other people's conversation lists (docs/adr/0008): groups
    # created and invitations sent per user, and invitations one inviter may have pending with
    # one invitee at a time.
    groups_per_user: Rate
    invitations_per_user: Rate
    pending_invitations_per_invitee: int


@dataclass(frozen=True)
class ConversationDetail:
    conversation: store.ConversationRecord
    members: list[store.MemberRecord]


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: uuid.UUID
    ciphertext: bytes
    nonce: bytes
    auth_tag: bytes
    content_type: str
    parent_id: uuid.UUID | None
    key_epoch: int

    def digest(self, conversation_id: uuid.UUID) -> bytes:
        parts = [
            conversation_id.bytes,
            self.message_id.bytes,
            self.ciphertext,
            self.nonce,
            self.auth_tag,
            self.content_type.encode(),
            (self.parent_id.bytes if self.parent_id else b""),
            str(self.key_epoch).encode(),
        ]
        hasher = hashlib.sha256()
        for part in parts:
            hasher.update(len(part).to_bytes(4, "big") + part)
        return hasher.digest()


@dataclass(frozen=True)
class SentMessage:
    message_id: uuid.UUID
    seq: int
    created_at: datetime
    created: bool


def _direct_pair(a: uuid.UUID, b: uuid.UUID) -> str:
    low, high = sorted((a, b))
    return f"{low}:{high}"


class MessagingService:
    def __init__(
        self, db: Database, limiter: RateLimiter, clock: Clock, limits: MessagingLimits, metrics: Metrics
    ) -> None:
        self._db = db
        self._limiter = limiter
        self._clock = clock
        self._limits = limits
        self._sent = metrics.messages_sent

    async def _access(
        self,
        conn: Connection,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        *,
        joined: bool = True,
        lock: bool = False,
    ) -> tuple[store.ConversationRecord, store.MemberRecord]:
        """The conversation and the caller's membership, or 404 (also for invitees when `joined`)."""
        conversation = await store.conversation(conn, conversation_id, lock=lock)
        member = await store.membership(conn, conversation_id, user_id) if conversation else None
        if conversation is None or member is None or (joined and member.state != "joined"):
            raise not_found("No such conversation.")
        return conversation, member

    async def _reachable(self, conn: Connection, user_id: uuid.UUID, *, by: uuid.UUID) -> None:
        """404 unless `user_id` is an active account that has not blocked `by`. A block answers
        exactly as a missing account does (same status, same body), so the blocked user cannot
        tell that they were blocked."""
        if not await store.user_is_active(conn, user_id) or await is_blocked(
            conn, blocker=user_id, blocked=by
        ):
            raise not_found("No such user.")

    async def _spend(self, purpose: str, principal: Principal, rate: Rate) -> None:
        """One hit on a per-user budget, shared by every device and process; 429 when spent."""
        decision = await self._limiter.hit(
            limiter_key(purpose, str(principal.user_id)), rate, self._clock.now().timestamp()
        )
        if not decision.allowed:
            raise too_many_requests(decision.retry_after_seconds)

    async def _check_built_on_latest(
        self, conn: Connection, conversation_id: uuid.UUID, after_event_id: int | None
    ) -> None:
        """409 with `last_event_id` unless `after_event_id` is the conversation's latest event
        (ADR 0017). Callers hold the conversation's row lock and call this before any check that
        reads the roster, so a commit built on an older chain changes nothing and its client
        refetches the events, rather than two commits on one predecessor forking the chain."""
        if after_event_id is None:
            return
        latest = await store.last_event_id(conn, conversation_id)
        if latest != after_event_id:
            raise conflict(
                f"The conversation changed after event {after_event_id}: fetch the new events "
                "and rebuild the commit on the latest one.",
                last_event_id=latest,
            )

    @staticmethod
    async def _record(
        conn: Connection,
        principal: Principal,
        conversation_id: uuid.UUID,
        kind: str,
        *,
        subject: uuid.UUID,
        epoch: int,
        commit: bytes | None,
        now: datetime,
    ) -> None:
        """One membership event made by the caller's device (callers hold the conversation's lock)."""
        await store.record_event(
            conn,
            conversation_id,
            kind,
            actor_id=principal.user_id,
            actor_device_id=principal.session_id,
            subject_id=subject,
            epoch=epoch,
            commit=commit,
            now=now,
        )

    async def create_direct(
        self, principal: Principal, member_id: uuid.UUID
    ) -> tuple[ConversationDetail, bool]:
        if member_id == principal.user_id:
            raise validation_failed([FieldError(("member_id",), "A direct conversation needs another user.")])
        now = self._clock.now()
        pair = _direct_pair(principal.user_id, member_id)
        async with self._db.transaction("messaging_create_direct") as conn:
            await self._reachable(conn, member_id, by=principal.user_id)
            conversation_id = uuid.uuid4()
            created = await store.insert_conversation(conn, conversation_id, "direct", now, direct_pair=pair)
            if created:
                for user in (principal.user_id, member_id):
                    await store.add_member(
                        conn,
                        conversation_id,
                        user,
                        role="member",
                        state="joined",
                        joined_after_seq=0,
                        invited_by=None,
                        now=now,
                    )
                # A direct conversation carries no commit: its roster is two users by construction,
                # which clients check themselves, so there is no chain of changes to sign.
                await self._record(
                    conn,
                    principal,
                    conversation_id,
                    "created",
                    subject=member_id,
                    epoch=0,
                    commit=None,
                    now=now,
                )
            else:
                found = await store.direct_conversation(conn, pair)
                assert found is not None
                conversation_id = found
                await self._rejoin_direct(conn, conversation_id, principal, now)
            return await self._detail(conn, conversation_id), created

    async def _rejoin_direct(
        self, conn: Connection, conversation_id: uuid.UUID, principal: Principal, now: datetime
    ) -> None:
        """A pair has one direct conversation. Whoever left it comes back only by starting it again
        themselves (history from before stays closed to them, and the epoch moves on); the other
        side starting it changes nothing and is shown the conversation without them, so nobody is
        put back into a conversation they left, or sent messages there, without their consent."""
        user = principal.user_id
        conversation = await store.conversation(conn, conversation_id, lock=True)
        assert conversation is not None
        if await store.membership(conn, conversation_id, user) is not None:
            return
        await store.add_member(
            conn,
            conversation_id,
            user,
            role="member",
            state="joined",
            joined_after_seq=conversation.last_seq,
            invited_by=user,
            now=now,
        )
        epoch = await store.bump_epoch(conn, conversation_id)
        await self._record(
            conn, principal, conversation_id, "joined", subject=user, epoch=epoch, commit=None, now=now
        )

    async def create_group(
        self, principal: Principal, encrypted_meta: bytes | None, commit: bytes | None = None
    ) -> ConversationDetail:
        # The group's name and avatar are ciphertext like a message's (ADR 0009): refuse what is
        # evidently plaintext before anything, the rate budget included, is spent.
        if encrypted_meta is not None and looks_like_text(encrypted_meta):
            raise validation_failed(
                [FieldError(("encrypted_meta",), "Looks like plaintext, not ciphertext.")]
            )
        await self._spend("groups", principal, self._limits.groups_per_user)
        now = self._clock.now()
        conversation_id = uuid.uuid4()
        async with self._db.transaction("messaging_create_group") as conn:
            await store.insert_conversation(
                conn, conversation_id, "group", now, encrypted_meta=encrypted_meta
            )
            await store.add_member(
                conn,
                conversation_id,
                principal.user_id,
                role="owner",
                state="joined",
                joined_after_seq=0,
                invited_by=None,
                now=now,
            )
            await self._record(
                conn,
                principal,
                conversation_id,
                "created",
                subject=principal.user_id,
                epoch=0,
                commit=commit,
                now=now,
            )
            return await self._detail(conn, conversation_id)

    async def _detail(self, conn: Connection, conversation_id: uuid.UUID) -> ConversationDetail:
        conversation = await store.conversation(conn, conversation_id)
        assert conversation is not None
        return ConversationDetail(conversation, await store.members(conn, conversation_id))

    async def get(self, principal: Principal, conversation_id: uuid.UUID) -> ConversationDetail:
        async with self._db.connection() as conn:
            await self._access(conn, principal.user_id, conversation_id, joined=False)
            return await self._detail(conn, conversation_id)

    async def conversations(
        self, principal: Principal, after: uuid.UUID | None, limit: int
    ) -> list[ConversationDetail]:
        async with self._db.connection() as conn:
            records = await store.conversations_of(conn, principal.user_id, after, limit)
            return [ConversationDetail(c, await store.members(conn, c.id)) for c in records]

    async def invite(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        invitee: uuid.UUID,
        commit: bytes | None = None,
        *,
        after_event_id: int | None = None,
    ) -> None:
        """Every attempt spends the inviter's hourly budget, refused ones too (probing costs as
        much as inviting). An invitation lands in the invitee's conversation list, so one inviter
        may have only a few pending with the same invitee: nobody can fill someone's list, and
        because the bound is per inviter, a flooder cannot use up anyone else's invitations."""
        await self._spend("invitations", principal, self._limits.invitations_per_user)
        now = self._clock.now()
        async with self._db.transaction("messaging_invite") as conn:
            conversation, member = await self._access(conn, principal.user_id, conversation_id, lock=True)
            await self._check_built_on_latest(conn, conversation_id, after_event_id)
            if conversation.type != "group" or member.role not in _MANAGERS:
                raise forbidden("Only group owners and admins invite.")
            await self._reachable(conn, invitee, by=principal.user_id)
            if await store.membership(conn, conversation_id, invitee) is not None:
                raise conflict("This user is already invited or a member.")
            # Concurrent invitations of one pair into different groups lock different conversation
            # rows; this lock makes them count one after the other.
            await store.lock_invitations(conn, principal.user_id, invitee)
            pending = await store.pending_invitations(conn, principal.user_id, invitee)
            if pending >= self._limits.pending_invitations_per_invitee:
                raise Problem(
                    429,
                    f"You have {pending} invitations pending with this user; wait until they answer.",
                    headers={"Retry-After": str(_PENDING_RETRY_SECONDS)},
                )
            await store.add_member(
                conn,
                conversation_id,
                invitee,
                role="member",
                state="invited",
                joined_after_seq=0,
                invited_by=principal.user_id,
                now=now,
            )
            await self._record(
                conn,
                principal,
                conversation_id,
                "invited",
                subject=invitee,
                epoch=conversation.epoch,
                commit=commit,
                now=now,
            )

    async def answer_invitation(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        accept: bool,
        commit: bytes | None = None,
        *,
        after_event_id: int | None = None,
    ) -> None:
        now = self._clock.now()
        async with self._db.transaction("messaging_answer_invitation") as conn:
            conversation, member = await self._access(
                conn, principal.user_id, conversation_id, joined=False, lock=True
            )
            await self._check_built_on_latest(conn, conversation_id, after_event_id)
            if member.state != "invited":
                raise conflict("There is no pending invitation.")
            if accept:
                # History before joining stays unreadable: the cursor starts at the current seq.
                await store.join(conn, conversation_id, principal.user_id, conversation.last_seq)
                epoch = await store.bump_epoch(conn, conversation_id)
            else:
                await store.delete_member(conn, conversation_id, principal.user_id)
                epoch = conversation.epoch
            await self._record(
                conn,
                principal,
                conversation_id,
                "joined" if accept else "declined",
                subject=principal.user_id,
                epoch=epoch,
                commit=commit,
                now=now,
            )

    async def remove_member(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        subject: uuid.UUID,
        commit: bytes | None = None,
        *,
        after_event_id: int | None = None,
    ) -> None:
        """Leave, or remove someone (managers). The last joined member leaving ends the conversation
        (its events go with it). When the last owner leaves, an heir becomes owner (the first admin,
        else the longest-standing joined member): a `role_changed` event after the `left` one, with
        the leaver as actor and no commit of its own, since the leave's commit covers the roster
        that results."""
        now = self._clock.now()
        async with self._db.transaction("messaging_remove_member") as conn:
            conversation, actor = await self._access(
                conn, principal.user_id, conversation_id, joined=subject != principal.user_id, lock=True
            )
            await self._check_built_on_latest(conn, conversation_id, after_event_id)
            target = (
                actor
                if subject == principal.user_id
                else await store.membership(conn, conversation_id, subject)
            )
            if target is None:
                raise not_found("No such member.")
            if subject != principal.user_id and (
                conversation.type != "group"
                or actor.role not in _MANAGERS
                or (target.role == "owner")
                or (target.role == "admin" and actor.role != "owner")
            ):
                raise forbidden("Not allowed to remove this member.")
            await store.delete_member(conn, conversation_id, subject)
            epoch = conversation.epoch
            if target.state == "joined":
                epoch = await store.bump_epoch(conn, conversation_id)
            remaining = [m for m in await store.members(conn, conversation_id) if m.state == "joined"]
            if not remaining:
                await store.delete_conversation(conn, conversation_id)
                return
            kind = "left" if subject == principal.user_id else "removed"
            await self._record(
                conn, principal, conversation_id, kind, subject=subject, epoch=epoch, commit=commit, now=now
            )
            if target.role == "owner" and not any(m.role == "owner" for m in remaining):
                heir = next((m for m in remaining if m.role == "admin"), remaining[0])
                await store.set_role(conn, conversation_id, heir.user_id, "owner")
                await self._record(
                    conn,
                    principal,
                    conversation_id,
                    "role_changed",
                    subject=heir.user_id,
                    epoch=epoch,
                    commit=None,
                    now=now,
                )

    async def set_role(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        subject: uuid.UUID,
        role: str,
        commit: bytes | None = None,
        *,
        after_event_id: int | None = None,
    ) -> None:
        """The owner makes a joined member an admin, or an admin a member again: a `role_changed`
        event. Setting the role a member already has changes nothing and records nothing (a
        retried request does not add a second event)."""
        now = self._clock.now()
        async with self._db.transaction("messaging_set_role") as conn:
            conversation, actor = await self._access(conn, principal.user_id, conversation_id, lock=True)
            await self._check_built_on_latest(conn, conversation_id, after_event_id)
            target = await store.membership(conn, conversation_id, subject)
            if target is None:
                raise not_found("No such member.")
            if conversation.type != "group" or actor.role != "owner" or target.role == "owner":
                raise forbidden("Only the group owner changes roles, and not their own.")
            if target.state != "joined":
                raise conflict("Only joined members get a role.")
            if target.role == role:
                return
            await store.set_role(conn, conversation_id, subject, role)
            await self._record(
                conn,
                principal,
                conversation_id,
                "role_changed",
                subject=subject,
                epoch=conversation.epoch,
                commit=commit,
                now=now,
            )

    async def events(
        self, principal: Principal, conversation_id: uuid.UUID, after_id: int, limit: int
    ) -> list[store.EventRecord]:
        """The conversation's membership changes in order, to its joined members and to those
        invited to it: an invitee checks the chain (who invited them, into which roster) before
        accepting, and sees nothing by it that accepting would not show them at once."""
        async with self._db.connection() as conn:
            await self._access(conn, principal.user_id, conversation_id, joined=False)
            return await store.events_after(conn, conversation_id, after_id, limit)

    async def check_send_rate(self, principal: Principal) -> None:
        """One budget per user for HTTP and WebSocket sends, across all devices and processes."""
        decision = await self._limiter.hit(
            messaging_budget_key(principal.user_id),
            self._limits.sends_per_user,
            self._clock.now().timestamp(),
        )
        if not decision.allowed:
            raise too_many_requests(decision.retry_after_seconds)

    def check_envelope(self, message: OutgoingMessage) -> None:
        if len(message.ciphertext) > self._limits.max_ciphertext_bytes:
            raise Problem(413, f"The ciphertext exceeds {self._limits.max_ciphertext_bytes} bytes.")
        if looks_like_text(message.ciphertext):
            raise validation_failed([FieldError(("ciphertext",), "Looks like plaintext, not ciphertext.")])

    async def send(
        self, principal: Principal, conversation_id: uuid.UUID, message: OutgoingMessage
    ) -> SentMessage:
        """Store one envelope. Idempotent per (sender, message_id): a retry with the same content
        gets the original seq and time, other content a 409. seq is gap-free in commit order
        because the conversation row is locked from taking a seq until commit."""
        self.check_envelope(message)
        digest = message.digest(conversation_id)
        now = self._clock.now()
        record = store.MessageRecord(
            conversation_id,
            0,
            message.message_id,
            principal.user_id,
            principal.session_id,
            message.content_type,
            message.ciphertext,
            message.nonce,
            message.auth_tag,
            message.parent_id,
            message.key_epoch,
            now,
        )
        async with self._db.connection() as conn:
            try:
                outcome = await store.send_message(conn, record, digest)
            except asyncpg.UniqueViolationError:
                # A concurrent retry committed first; read what it stored.
                earlier = await store.message_by_sender(conn, principal.user_id, message.message_id)
                outcome = store.SendOutcome(True, None, earlier, None)
        if not outcome.member:
            raise not_found("No such conversation.")
        if outcome.existing is not None:
            seq, created_at, stored_digest, stored_conversation = outcome.existing
            if stored_digest != digest or stored_conversation != conversation_id:
                raise conflict("This message_id was already used for another message.")
            return SentMessage(message.message_id, seq, created_at, created=False)
        if outcome.seq is None:
            raise conflict(
                "The conversation's membership changed; rotate the group key.", current_epoch=outcome.epoch
            )
        self._sent.inc()
        return SentMessage(message.message_id, outcome.seq, now, created=True)

    async def history(
        self,
        principal: Principal,
        conversation_id: uuid.UUID,
        *,
        after_seq: int | None,
        before_seq: int | None,
        limit: int,
    ) -> list[store.MessageRecord]:
        async with self._db.connection() as conn:
            _, member = await self._access(conn, principal.user_id, conversation_id)
            floor = member.joined_after_seq
            if before_seq is not None:
                return await store.messages_before(conn, conversation_id, before_seq, floor, limit)
            return await store.messages_after(conn, conversation_id, max(after_seq or 0, floor), limit)

    async def receipt(
        self, principal: Principal, conversation_id: uuid.UUID, kind: str, up_to_seq: int
    ) -> None:
        async with self._db.transaction("messaging_receipt") as conn:
            conversation, _ = await self._access(conn, principal.user_id, conversation_id)
            if up_to_seq > conversation.last_seq:
                raise validation_failed(
                    [FieldError(("up_to_seq",), "Beyond the conversation's last message.")]
                )
            await store.raise_receipt(
                conn, conversation_id, principal.user_id, kind, up_to_seq, self._clock.now()
            )
