"""The per-process registry of sockets, and fan-out across processes through PostgreSQL.

Writers NOTIFY in the transaction that commits the row (a message, a device message, a membership
event, a receipt, a key change, a master-key reset, a revoked session); PostgreSQL delivers the
notification to every listening process only after commit, so a socket is never woken for a row it
cannot read yet.
Payloads carry ids only. If the listening connection drops, notifications in between are lost, so
on reconnect every socket is woken as if everything were new: the pull from the database (and the
replay on the client's next connection) is the safety net, see docs/adr/0011.

Access must not depend on a notification either. On reconnect, and every `recheck_seconds`, one
query re-reads the session and the memberships of every open socket of this process: sockets of
revoked or expired sessions close with 4401, conversations the user left stop. Live delivery also
checks membership when it reads a new message, so a lost removal never lets a message through.

Notifications (and re-checks, so that they apply in order with them) go through one queue handled
by one dispatcher task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import Awaitable

from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.listener import Notifications
from veil.core.logging import get_logger
from veil.core.problems import BackendUnavailable
from veil.core.security.sessions import REVOCATION_CHANNEL
from veil.keys import store as keys_store
from veil.messaging import store as messaging_store
from veil.realtime import store
from veil.realtime.connection import CLOSE_REPLACED, CLOSE_SESSION_ENDED, CLOSE_SHUTDOWN, DeviceConnection
from veil.realtime.frames import (
    DevicePendingFrame,
    EncodedMessage,
    IdentityChangedFrame,
    KeysChangedFrame,
    MembershipFrame,
    PrekeysLowFrame,
    ReceiptFrame,
)

log = get_logger(__name__)

CONNECT_CHANNEL = "veil_ws_connect"
DEVICE_CHANNEL = "veil_device_messages"
_CHANNELS = (
    messaging_store.MESSAGE_CHANNEL,
    messaging_store.EVENT_CHANNEL,
    DEVICE_CHANNEL,
    REVOCATION_CHANNEL,
    CONNECT_CHANNEL,
)
# Not a PostgreSQL channel: the inbox entry that asks the dispatcher for a re-check.
_RECHECK = ""
# Notifications taken from the inbox in one go.
_DISPATCH_BATCH = 500


class Hub:
    def __init__(
        self, db: Database, notifications: Notifications, clock: Clock, recheck_seconds: float
    ) -> None:
        self._db = db
        self._notifications = notifications
        self._clock = clock
        self._recheck_seconds = recheck_seconds
        self._recheck_queued = False
        self._by_device: dict[uuid.UUID, DeviceConnection] = {}
        self._by_user: dict[uuid.UUID, set[DeviceConnection]] = {}
        self._by_conversation: dict[uuid.UUID, set[DeviceConnection]] = {}
        self._inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # After a gap in listening, every socket re-reads what it may have missed.
        await self._notifications.subscribe(_CHANNELS, self._on_notify, on_up=self._listening_again)
        self._tasks = [
            asyncio.create_task(self._dispatch_forever(), name="hub-dispatcher"),
            asyncio.create_task(self._recheck_forever(), name="hub-recheck"),
        ]

    async def close(self) -> None:
        """Close every socket with 1001 (going away), then stop listening."""
        for connection in list(self._by_device.values()):
            connection.close(CLOSE_SHUTDOWN)
        for _ in range(50):
            if not self._by_device:
                break
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- registry --------------------------------------------------------------------------------

    async def register(self, connection: DeviceConnection) -> None:
        """Hold this device's socket; an older socket of the same device, here or in any other
        process, is closed with 4409."""
        older = self._by_device.get(connection.device_id)
        if older is not None:
            older.close(CLOSE_REPLACED)
            self._forget(older)
        self._by_device[connection.device_id] = connection
        self._by_user.setdefault(connection.user_id, set()).add(connection)
        async with self._db.connection() as conn:
            await conn.execute(
                "SELECT pg_notify($1, $2)", CONNECT_CHANNEL, f"{connection.device_id}:{connection.token}"
            )
            cursors = await messaging_store.delivery_cursors(conn, connection.user_id, connection.device_id)
        for conversation_id, after in cursors.items():
            self._subscribe(connection, conversation_id, after)

    def unregister(self, connection: DeviceConnection) -> None:
        if self._by_device.get(connection.device_id) is connection:
            self._forget(connection)

    def _forget(self, connection: DeviceConnection) -> None:
        self._by_device.pop(connection.device_id, None)
        self._by_user.get(connection.user_id, set()).discard(connection)
        for conversation_id in connection.conversations:
            self._by_conversation.get(conversation_id, set()).discard(connection)

    def _subscribe(self, connection: DeviceConnection, conversation_id: uuid.UUID, after: int) -> None:
        self._by_conversation.setdefault(conversation_id, set()).add(connection)
        connection.subscribe(conversation_id, after)

    def _unsubscribe(self, connection: DeviceConnection, conversation_id: uuid.UUID) -> None:
        self._by_conversation.get(conversation_id, set()).discard(connection)
        connection.unsubscribe(conversation_id)

    # --- notifications ---------------------------------------------------------------------------

    def _on_notify(self, channel: str, payload: str) -> None:
        self._inbox.put_nowait((channel, payload))

    def _listening_again(self) -> None:
        self._wake_everything()
        self._queue_recheck()

    async def _recheck_forever(self) -> None:
        while True:
            await asyncio.sleep(self._recheck_seconds)
            self._queue_recheck()

    def _queue_recheck(self) -> None:
        # One waiting re-check covers every request made before it runs.
        if not self._recheck_queued:
            self._recheck_queued = True
            self._inbox.put_nowait((_RECHECK, ""))

    def _wake_everything(self) -> None:
        for connection in self._by_device.values():
            connection.wake_device()
            for conversation_id in connection.conversations:
                connection.wake(conversation_id)

    async def _dispatch_forever(self) -> None:
        while True:
            queued = [await self._inbox.get()]
            while not self._inbox.empty() and len(queued) < _DISPATCH_BATCH:
                queued.append(self._inbox.get_nowait())
            # In order; a run of new-message notifications is read in one go (under load the
            # dispatcher is bound by round trips to the database, not by CPU).
            messages: list[tuple[uuid.UUID, int]] = []
            for channel, payload in queued:
                if channel == messaging_store.MESSAGE_CHANNEL:
                    conversation, seq = payload.split(":", 1)
                    messages.append((uuid.UUID(conversation), int(seq)))
                    continue
                if messages:
                    await self._guarded(self._new_messages(messages), messaging_store.MESSAGE_CHANNEL)
                    messages = []
                await self._guarded(self._dispatch(channel, payload), channel)
            if messages:
                await self._guarded(self._new_messages(messages), messaging_store.MESSAGE_CHANNEL)

    @staticmethod
    async def _guarded(step: Awaitable[None], channel: str) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hub_dispatch_failed", channel=channel)

    async def _dispatch(self, channel: str, payload: str) -> None:
        if channel == _RECHECK:
            self._recheck_queued = False
            await self._recheck()
        elif channel == DEVICE_CHANNEL:
            if (target := self._by_device.get(uuid.UUID(payload))) is not None:
                target.wake_device()
        elif channel == REVOCATION_CHANNEL:
            for part in payload.split(","):
                if (revoked := self._by_device.get(uuid.UUID(part))) is not None:
                    revoked.close(CLOSE_SESSION_ENDED)
        elif channel == CONNECT_CHANNEL:
            device, token = payload.split(":", 1)
            older = self._by_device.get(uuid.UUID(device))
            if older is not None and older.token != token:
                older.close(CLOSE_REPLACED)
                self._forget(older)
        elif payload.startswith("membership:"):
            await self._membership(int(payload.split(":", 1)[1]))
        elif payload.startswith("receipt:"):
            _, conversation, user, kind, seq = payload.split(":")
            frame = ReceiptFrame(
                conversation_id=uuid.UUID(conversation),
                user_id=uuid.UUID(user),
                receipt=kind,
                up_to_seq=int(seq),
            )
            for connection in self._by_conversation.get(uuid.UUID(conversation), ()):
                connection.push(frame)
        elif payload.startswith("prekeys:"):
            _, device, remaining = payload.split(":")
            if (owner := self._by_device.get(uuid.UUID(device))) is not None:
                owner.push(PrekeysLowFrame(one_time_prekeys=int(remaining)))
        elif payload.startswith("keys:"):
            _, user, device, change = payload.split(":")
            await self._keys_changed(uuid.UUID(user), device, change)
        elif payload.startswith("pending:"):
            _, user, device = payload.split(":")
            self._device_pending(uuid.UUID(user), uuid.UUID(device))
        elif payload.startswith("identity:"):
            await self._identity_changed(uuid.UUID(payload.split(":", 1)[1]))

    async def _new_messages(self, notified: list[tuple[uuid.UUID, int]]) -> None:
        """Read new messages once for every local socket of their conversations, in two statements
        however many arrived. Sockets that are not exactly at seq - 1 read what they miss
        themselves (the message is only a shortcut).

        Membership is read with them: a socket whose user is no longer a joined member (its
        removal notification was lost, or is still on its way) is unsubscribed instead of served."""
        subscribers = {
            conversation_id: list(self._by_conversation.get(conversation_id, ()))
            for conversation_id, _ in notified
        }
        wanted = [(conversation_id, seq) for conversation_id, seq in notified if subscribers[conversation_id]]
        if not wanted:
            return
        members = {(c, connection.user_id) for c, local in subscribers.items() for connection in local}
        async with self._db.connection() as conn:
            records = await messaging_store.messages_at(conn, wanted)
            joined = await store.joined_among(conn, list(members))
        encoded = {(r.conversation_id, r.seq): EncodedMessage.of(r) for r in records}
        for conversation_id, seq in wanted:
            message = encoded.get((conversation_id, seq))
            for connection in subscribers[conversation_id]:
                joined_after = joined.get((conversation_id, connection.user_id))
                if joined_after is None:
                    self._unsubscribe(connection, conversation_id)
                elif message is not None and joined_after < seq:
                    connection.offer(message)
                else:
                    connection.wake(conversation_id)

    async def _recheck(self) -> None:
        """Re-read every open socket's session and memberships, in one query for the process."""
        connections = list(self._by_device.values())
        if not connections:
            return
        try:
            async with self._db.connection() as conn:
                states = await store.socket_states(
                    conn, [(c.device_id, c.user_id) for c in connections], self._clock.now()
                )
        except BackendUnavailable:
            # Tried again at the next period, and when the listener comes back with the database.
            log.warning("ws_recheck_failed", sockets=len(connections))
            return
        closed = 0
        for connection in connections:
            if self._by_device.get(connection.device_id) is not connection:
                continue  # gone or replaced while the query ran
            state = states.get(connection.device_id)
            if state is None or not state.active:
                connection.close(CLOSE_SESSION_ENDED)
                closed += 1
                continue
            for conversation_id in connection.conversations - state.cursors.keys():
                self._unsubscribe(connection, conversation_id)
            for conversation_id, after in state.cursors.items():
                if conversation_id not in connection.conversations:
                    self._subscribe(connection, conversation_id, after)
        if closed:
            log.info("ws_recheck_closed", sockets=len(connections), closed=closed)

    async def _membership(self, event_id: int) -> None:
        async with self._db.connection() as conn:
            event = await store.membership_event(conn, event_id)
            if event is None:
                return
            members = await store.member_ids(conn, event.conversation_id)
            joined_after = await store.joined_after(conn, event.conversation_id, event.subject_id)
        frame = MembershipFrame(
            conversation_id=event.conversation_id,
            kind=event.kind,
            user_id=event.subject_id,
            actor_id=event.actor_id,
            epoch=event.epoch,
        )
        # Access changes first, so a removed member's sockets stop before anyone else hears of it.
        for connection in list(self._by_user.get(event.subject_id, ())):
            if joined_after is None:
                self._unsubscribe(connection, event.conversation_id)
            elif event.kind in ("joined", "created"):
                self._subscribe(connection, event.conversation_id, joined_after)
        for user in {*members, event.subject_id}:
            for connection in self._by_user.get(user, ()):
                connection.push(frame)
        for user in members:
            for connection in self._by_user.get(user, ()):
                if event.conversation_id not in connection.conversations and event.kind == "created":
                    self._subscribe(connection, event.conversation_id, 0)

    async def _keys_changed(self, user_id: uuid.UUID, device: str, change: str) -> None:
        async with self._db.connection() as conn:
            contacts = await store.contacts_of(conn, user_id)
        frame = KeysChangedFrame(user_id=user_id, device_id=uuid.UUID(device), change=change)
        for contact in contacts:
            for connection in self._by_user.get(contact, ()):
                if connection.device_id != uuid.UUID(device):
                    connection.push(frame)

    def _device_pending(self, user_id: uuid.UUID, device_id: uuid.UUID) -> None:
        """A new device of the user, or one whose certified keys changed: the user's other devices
        may approve (certify) it."""
        pending = DevicePendingFrame(device_id=device_id)
        for connection in self._by_user.get(user_id, ()):
            if connection.device_id != device_id:
                connection.push(pending)

    async def _identity_changed(self, user_id: uuid.UUID) -> None:
        """A master-key reset: everyone who shares a conversation with the user hears the new key
        (read now, so of several resets in a row each frame carries the latest)."""
        async with self._db.connection() as conn:
            current = await keys_store.master_key(conn, user_id)
            if current is None:
                return
            contacts = await store.contacts_of(conn, user_id)
        frame = IdentityChangedFrame(
            user_id=user_id, master_key=base64.b64encode(current.master_key).decode()
        )
        for contact in contacts:
            for connection in self._by_user.get(contact, ()):
                connection.push(frame)
