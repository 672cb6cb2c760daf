"""Operator use cases: users' metadata, suspension and session revocation, the incident log, user
notices and the audit trail.

Every use case runs in one named transaction that first checks, from the database, that the
caller holds the operator role, and ends by writing its audit row: an action is never recorded
without having happened, nor done without being recorded. To anyone else the operator API does
not exist (the same 404 as an unknown path). The role is granted and taken away only by the
command-line tool (`set_role`), never through the API.

The same use cases serve the `veil` command (`veil users`, `veil sessions`, `veil incidents`): its
actor is `COMMAND_LINE`, trusted by its access to the database like `set_role`, and audited with no
operator id.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from veil.core import outbox
from veil.core.clock import Clock
from veil.core.db import Connection, Database
from veil.core.logging import get_logger
from veil.core.problems import (
    FieldError,
    Problem,
    conflict,
    not_found,
    validation_failed,
)
from veil.core.security.authn import Principal
from veil.core.security.sessions import SessionGuard, notify_revoked
from veil.operator import store
from veil.operator.store import AuditEntry, Incident, IncidentEntry, UserMetadata

log = get_logger(__name__)

# A notice says that something happened and what to do; never what, and nothing about the
# recipient's data, so that the mail itself discloses nothing and is no template for phishing
# (no links, no request to reply).
NOTICE_SUBJECT = "Security notice about your Veil account"
NOTICE_BODY = """\
We are writing to let you know that there was a security incident at Veil that may affect your
account.

Your messages and files are end-to-end encrypted: Veil never holds the keys to read them.

What we recommend:
  - sign in to Veil, review your active sessions and revoke any you do not recognise;
  - change your Veil password (with the Veil client: `veil-client password`), and change it
    anywhere else you used the same password; this signs out all your other sessions;
  - if you cannot sign in any more, reset your password with a code sent to this address
    (`veil-client reset-password YOUR-EMAIL`);
  - verify your contacts' safety numbers again in the app.

This notice deliberately contains no details about your data. We will never ask you for your
password or your keys, by email or otherwise.
"""

# The clock skew tolerated on a client-supplied detection time.
_FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class IncidentLog:
    incident: Incident
    entries: list[IncidentEntry]
    users_notified: int


@dataclass(frozen=True)
class Notified:
    notified: int
    already_notified: int
    notified_at: datetime


@dataclass(frozen=True)
class CommandLine:
    """The operator at a shell with the database's address (the `veil` command)."""


COMMAND_LINE = CommandLine()
# Who performs an operator action: an API caller, whose role is checked in every transaction, or
# the command line.
Actor = Principal | CommandLine


def _operator_id(actor: Actor) -> uuid.UUID | None:
    """The id recorded as the actor in the audit trail and the incident log (None: the command line)."""
    return actor.user_id if isinstance(actor, Principal) else None


def _who(actor: Actor) -> str:
    return str(actor.user_id) if isinstance(actor, Principal) else "command_line"


def _no_such_path() -> Problem:
    # Word for word what an unknown path answers (veil.core.web.errors): nothing to tell apart.
    return not_found("No resource at this path.")


class OperatorService:
    def __init__(self, db: Database, clock: Clock, sessions: SessionGuard | None) -> None:
        """`sessions`: this process's session cache, if it serves requests (not the `veil` command)."""
        self._db = db
        self._clock = clock
        self._sessions = sessions

    def _forget(self, revoked: list[uuid.UUID]) -> None:
        """After the commit: this process refuses the sessions at once, others on the notice."""
        if self._sessions is not None:
            self._sessions.revoked(revoked)

    async def check_operator(self, principal: Principal) -> None:
        """404 unless the caller holds the operator role right now. Asked before the request body
        is read, so that nobody else learns anything from validation errors either."""
        async with self._db.connection() as conn:
            if not await store.is_operator(conn, principal.user_id):
                raise _no_such_path()

    @asynccontextmanager
    async def _as_operator(self, actor: Actor, name: str) -> AsyncIterator[Connection]:
        """A transaction for one operator action; an API caller's role is checked again inside
        it, so that an action and its audit row never outlive a revoked role."""
        async with self._db.transaction(name) as conn:
            if isinstance(actor, Principal) and not await store.is_operator(conn, actor.user_id):
                raise _no_such_path()
            yield conn

    async def users(self, actor: Actor, after: uuid.UUID | None, limit: int) -> list[UserMetadata]:
        now = self._clock.now()
        async with self._as_operator(actor, "operator_users") as conn:
            found = await store.users(conn, after, limit, now)
            await store.audit(conn, _operator_id(actor), "users_listed", now)
        return found

    async def user(self, actor: Actor, user_id: uuid.UUID) -> UserMetadata:
        now = self._clock.now()
        async with self._as_operator(actor, "operator_user") as conn:
            found = await store.user(conn, user_id, now)
            if found is None:
                raise not_found("No such user.")
            await store.audit(conn, _operator_id(actor), "user_viewed", now, target_user_id=user_id)
        return found

    async def find_user(self, actor: Actor, email: str) -> UserMetadata:
        """The account with this normalised email (`normalize_email`), audited as a view of it."""
        now = self._clock.now()
        async with self._as_operator(actor, "operator_find_user") as conn:
            found = await store.user_by_email(conn, email, now)
            if found is None:
                raise not_found("No account has this email.")
            await store.audit(conn, _operator_id(actor), "user_viewed", now, target_user_id=found.id)
        return found

    async def suspend(self, actor: Actor, user_id: uuid.UUID) -> None:
        """Suspend the account and end all its sessions at once (open WebSockets close on the
        revocation notice). Idempotent. Operators are suspended only after the command-line tool
        took their role away, so that no operator can lock the others out."""
        now = self._clock.now()
        async with self._as_operator(actor, "operator_suspend") as conn:
            status, role = await self._lock_user(conn, user_id)
            if role == "operator":
                raise conflict("Operators cannot be suspended; revoke the role with `veil operator revoke`.")
            if status == "disabled":
                raise conflict("The account is being erased.")
            await store.set_status(conn, user_id, "suspended", now)
            revoked = await store.revoke_sessions(conn, user_id, "account_disabled", now)
            await notify_revoked(conn, revoked)
            await store.audit(conn, _operator_id(actor), "user_suspended", now, target_user_id=user_id)
        self._forget(revoked)
        log.info(
            "security_event",
            kind="account_suspended",
            user_id=str(user_id),
            operator_id=_who(actor),
            sessions_revoked=len(revoked),
        )

    async def reinstate(self, actor: Actor, user_id: uuid.UUID) -> None:
        """Lift a suspension (idempotent). The user signs in again; no session comes back."""
        now = self._clock.now()
        async with self._as_operator(actor, "operator_reinstate") as conn:
            status, _ = await self._lock_user(conn, user_id)
            if status == "disabled":
                raise conflict("The account is being erased.")
            await store.set_status(conn, user_id, "active", now)
            await store.audit(conn, _operator_id(actor), "user_reinstated", now, target_user_id=user_id)
        log.info(
            "security_event",
            kind="account_reinstated",
            user_id=str(user_id),
            operator_id=_who(actor),
        )

    async def revoke_sessions(self, actor: Actor, user_id: uuid.UUID) -> None:
        """End every session of the user without suspending the account."""
        now = self._clock.now()
        async with self._as_operator(actor, "operator_revoke_sessions") as conn:
            await self._lock_user(conn, user_id)
            revoked = await store.revoke_sessions(conn, user_id, "revoked", now)
            await notify_revoked(conn, revoked)
            await store.audit(conn, _operator_id(actor), "user_sessions_revoked", now, target_user_id=user_id)
        self._forget(revoked)
        log.info(
            "security_event",
            kind="sessions_revoked_by_operator",
            user_id=str(user_id),
            operator_id=_who(actor),
            sessions_revoked=len(revoked),
        )

    async def create_incident(
        self, actor: Actor, title: str, scope: str, mitigation: str, detected_at: datetime | None
    ) -> Incident:
        now = self._clock.now()
        if detected_at is not None and detected_at > now + _FUTURE_TOLERANCE:
            raise validation_failed([FieldError(("detected_at",), "Must not be in the future.")])
        draft = Incident(
            id=uuid.uuid4(),
            number=0,  # assigned by the database
            title=title,
            scope=scope,
            mitigation=mitigation,
            detected_at=detected_at or now,
            created_at=now,
            created_by=_operator_id(actor),
        )
        async with self._as_operator(actor, "operator_incident_create") as conn:
            incident = await store.insert_incident(conn, draft)
            await store.audit(conn, _operator_id(actor), "incident_created", now, incident_id=incident.id)
        log.info("security_event", kind="incident_created", incident_id=str(incident.id))
        return incident

    async def incidents(self, actor: Actor, before: int | None, limit: int) -> list[Incident]:
        now = self._clock.now()
        async with self._as_operator(actor, "operator_incidents") as conn:
            found = await store.incidents(conn, before, limit)
            await store.audit(conn, _operator_id(actor), "incidents_listed", now)
        return found

    async def incident(self, actor: Actor, incident_id: uuid.UUID) -> IncidentLog:
        now = self._clock.now()
        async with self._as_operator(actor, "operator_incident") as conn:
            incident = await store.incident(conn, incident_id)
            if incident is None:
                raise not_found("No such incident.")
            entries = await store.entries(conn, incident_id)
            notified = await store.users_notified(conn, incident_id)
            await store.audit(conn, _operator_id(actor), "incident_viewed", now, incident_id=incident_id)
        return IncidentLog(incident, entries, notified)

    async def add_entry(self, actor: Actor, incident_id: uuid.UUID, kind: str, body: str) -> IncidentEntry:
        now = self._clock.now()
        async with self._as_operator(actor, "operator_incident_entry") as conn:
            if not await store.incident_exists(conn, incident_id):
                raise not_found("No such incident.")
            entry = await store.insert_entry(conn, incident_id, kind, body, _operator_id(actor), now)
            await store.audit(conn, _operator_id(actor), "incident_entry_added", now, incident_id=incident_id)
        return entry

    async def notify(self, actor: Actor, incident_id: uuid.UUID, user_ids: list[uuid.UUID]) -> Notified:
        """Queue the fixed notice for each listed user not yet told of this incident, and record
        who was told and when, in one transaction: the mails go out after the commit (the mail
        outbox retries while the mail server is down), so the record and the mails never disagree
        and a retry of the request tells nobody twice."""
        wanted = list(dict.fromkeys(user_ids))
        now = self._clock.now()
        async with self._as_operator(actor, "operator_notify") as conn:
            # Locked before "who was told" is read: two concurrent notifications would otherwise
            # both read "not yet" and mail everyone twice.
            if not await store.lock_incident(conn, incident_id):
                raise not_found("No such incident.")
            recipients = await store.recipients(conn, incident_id, wanted)
            if len(recipients) != len(wanted):
                raise not_found("No such user.")
            pending = [r for r in recipients if not r.already_notified]
            await outbox.enqueue_many(conn, [r.email for r in pending], NOTICE_SUBJECT, NOTICE_BODY)
            if pending:
                await store.insert_notifications(conn, incident_id, [(r.user_id, now) for r in pending])
                await store.insert_entry(
                    conn,
                    incident_id,
                    "notification",
                    f"{len(pending)} affected user(s) notified by email.",
                    _operator_id(actor),
                    now,
                )
            await store.audit(
                conn, _operator_id(actor), "incident_users_notified", now, incident_id=incident_id
            )
        log.info(
            "security_event", kind="incident_users_notified", incident_id=str(incident_id), count=len(pending)
        )
        return Notified(len(pending), len(recipients) - len(pending), now)

    async def audit_trail(self, actor: Actor, before: int | None, limit: int) -> list[AuditEntry]:
        now = self._clock.now()
        async with self._as_operator(actor, "operator_audit") as conn:
            # Reading the trail is itself an action: the row goes in before the page is read.
            await store.audit(conn, _operator_id(actor), "audit_viewed", now)
            return await store.audit_entries(conn, before, limit)

    @staticmethod
    async def _lock_user(conn: Connection, user_id: uuid.UUID) -> tuple[str, str]:
        found = await store.lock_user(conn, user_id)
        if found is None:
            raise not_found("No such user.")
        return found


async def set_role(db: Database, clock: Clock, email: str, role: str) -> uuid.UUID | None:
    """Grant (`operator`) or take away (`user`) the operator role of the account with this
    normalised email, recorded in the audit trail with no operator; the account's id, or None if
    there is none. For the command-line tool only."""
    now = clock.now()
    async with db.transaction("operator_set_role") as conn:
        changed = await store.set_role(conn, email, role, now)
        if changed is None:
            return None
        user_id, did_change = changed
        if did_change:
            action = "role_granted" if role == "operator" else "role_revoked"
            await store.audit(conn, None, action, now, target_user_id=user_id)
    if did_change:
        log.info("security_event", kind="operator_role_changed", user_id=str(user_id), role=role)
    return user_id
