"""Wire models of the operator API. Users' metadata and the incident log only: no model here has a
field that could carry ciphertext, a key, a token, a password hash or an IP address, and a test
walks the published schemas to keep it so."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from veil.core.wire import RequestModel, ResponseModel, Timestamp

UserStatus = Literal["active", "suspended", "disabled"]
Role = Literal["user", "operator"]
EntryKind = Literal["update", "mitigation", "notification"]
AuditAction = Literal[
    "role_granted",
    "role_revoked",
    "users_listed",
    "user_viewed",
    "user_suspended",
    "user_reinstated",
    "user_sessions_revoked",
    "incidents_listed",
    "incident_viewed",
    "incident_created",
    "incident_entry_added",
    "incident_users_notified",
    "audit_viewed",
]
# Free text with something besides ASCII whitespace, and no NUL (PostgreSQL text cannot hold it).
# Spelled with explicit code points: `\s` differs between regex engines (Rust here, others in clients).
_TEXT = r"^[^\x00]*[^\x00\x09-\x0d\x20][^\x00]*$"
Text = Annotated[str, Field(min_length=1, max_length=10_000, pattern=_TEXT)]


class AdminUserView(ResponseModel):
    user_id: uuid.UUID
    email: str
    status: UserStatus
    role: Role
    email_verified: bool
    created_at: Timestamp
    updated_at: Timestamp
    # The latest activity of any of the user's sessions, if there ever was one.
    last_seen_at: Timestamp | None
    active_sessions: int
    devices: int
    conversations: int
    messages_sent: int
    attachments: int


class AdminUserList(ResponseModel):
    items: list[AdminUserView]
    next_cursor: str | None


class CreateIncident(RequestModel):
    title: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    scope: Text
    mitigation: Text
    # When the breach became known; now if omitted. RFC 3339 with an offset.
    detected_at: AwareDatetime | None = None


class IncidentView(ResponseModel):
    incident_id: uuid.UUID
    number: int
    title: str
    scope: str
    mitigation: str
    detected_at: Timestamp
    created_at: Timestamp
    created_by: uuid.UUID | None


class IncidentList(ResponseModel):
    items: list[IncidentView]
    next_cursor: str | None


class AddIncidentEntry(RequestModel):
    kind: EntryKind
    body: Text


class IncidentEntryView(ResponseModel):
    seq: int
    kind: EntryKind
    body: str
    created_at: Timestamp
    author_id: uuid.UUID | None


class IncidentDetail(IncidentView):
    entries: list[IncidentEntryView]
    users_notified: int


class NotifyUsers(RequestModel):
    # One mail after another within the request: larger groups go in batches (those already told
    # are skipped, so a batch can simply be sent again).
    user_ids: list[uuid.UUID] = Field(min_length=1, max_length=100)


class NotificationResult(ResponseModel):
    # Told now, and skipped because they had already been told of this incident.
    notified: int
    already_notified: int
    notified_at: Timestamp


class AuditEntryView(ResponseModel):
    seq: int
    operator_id: uuid.UUID | None
    action: AuditAction
    target_user_id: uuid.UUID | None
    incident_id: uuid.UUID | None
    created_at: Timestamp


class AuditList(ResponseModel):
    items: list[AuditEntryView]
    next_cursor: str | None
