"""From the operator service's records to the wire models of the operator API, shared by the
routes under /v1/admin and the `veil` command's `--json` output."""

from __future__ import annotations

from veil.operator.schemas import (
    AdminUserView,
    AuditEntryView,
    IncidentDetail,
    IncidentEntryView,
    IncidentView,
)
from veil.operator.service import IncidentLog
from veil.operator.store import AuditEntry, Incident, IncidentEntry, UserMetadata


def user_view(user: UserMetadata) -> AdminUserView:
    return AdminUserView(
        user_id=user.id,
        email=user.email,
        status=user.status,
        role=user.role,
        email_verified=user.email_verified,
        created_at=user.created_at,
        updated_at=user.updated_at,
        last_seen_at=user.last_seen_at,
        active_sessions=user.active_sessions,
        devices=user.devices,
        conversations=user.conversations,
        messages_sent=user.messages_sent,
        attachments=user.attachments,
    )


def incident_view(incident: Incident) -> IncidentView:
    return IncidentView(
        incident_id=incident.id,
        number=incident.number,
        title=incident.title,
        scope=incident.scope,
        mitigation=incident.mitigation,
        detected_at=incident.detected_at,
        created_at=incident.created_at,
        created_by=incident.created_by,
    )


def entry_view(entry: IncidentEntry) -> IncidentEntryView:
    return IncidentEntryView(
        seq=entry.seq,
        kind=entry.kind,
        body=entry.body,
        created_at=entry.created_at,
        author_id=entry.author_id,
    )


def audit_view(entry: AuditEntry) -> AuditEntryView:
    return AuditEntryView(
        seq=entry.seq,
        operator_id=entry.operator_id,
        action=entry.action,
        target_user_id=entry.target_user_id,
        incident_id=entry.incident_id,
        created_at=entry.created_at,
    )


def incident_detail(found: IncidentLog) -> IncidentDetail:
    return IncidentDetail(
        **incident_view(found.incident).model_dump(),
        entries=[entry_view(e) for e in found.entries],
        users_notified=found.users_notified,
    )
