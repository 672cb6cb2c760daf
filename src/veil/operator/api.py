"""Operator routes under /v1/admin: parse, one service call, respond. Every endpoint is guarded: to
a caller without the operator role it is a 404, before anything of the request is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from veil.auth.policy import normalize_email
from veil.core.problems import Problem
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, Handler, json_response, no_content, state_of
from veil.core.web.params import ID_CURSOR, LIMIT, MAX_BIGINT, IntQuery, path_uuid
from veil.operator.schemas import (
    AddIncidentEntry,
    AdminUserList,
    AdminUserView,
    AuditList,
    CreateIncident,
    IncidentDetail,
    IncidentEntryView,
    IncidentList,
    IncidentView,
    NotificationResult,
    NotifyUsers,
)
from veil.operator.service import OperatorService
from veil.operator.views import audit_view, entry_view, incident_detail, incident_view, user_view

TAG = "operator"


def _service(request: Request) -> OperatorService:
    service: OperatorService = state_of(request, "operator")
    return service


async def _operators_only(request: Request, principal: Principal) -> None:
    await _service(request).check_operator(principal)


# Incidents and audit entries are listed newest first: the cursor is the last number seen.
NUMBER_CURSOR = IntQuery(
    "cursor", 1, MAX_BIGINT, None, "The `next_cursor` of the previous page: list what comes before it."
)


@dataclass(frozen=True)
class EmailQuery:
    """An email address, normalised as accounts store it; None when absent."""

    name: str
    description: str
    required: bool = False

    def parse(self, raw: str) -> str:
        try:
            return normalize_email(raw)
        except Problem:
            raise ValueError("Not a valid email address.") from None

    def default_value(self) -> None:
        return None

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "email", "maxLength": 320}

    def __call__(self, request: Request) -> str | None:
        value: str | None = request.state.query[self.name]
        return value


EMAIL = EmailQuery(
    "email",
    "Find the one account with this email instead of listing: a page of that account alone, or 404.",
)


async def list_users(request: Request, principal: Principal) -> Response:
    email = EMAIL(request)
    if email is not None:
        found = await _service(request).find_user(principal, email)
        return json_response(AdminUserList(items=[user_view(found)], next_cursor=None))
    limit = LIMIT(request)
    users = await _service(request).users(principal, ID_CURSOR(request), limit)
    next_cursor = str(users[-1].id) if len(users) == limit else None
    return json_response(AdminUserList(items=[user_view(u) for u in users], next_cursor=next_cursor))


async def get_user(request: Request, principal: Principal) -> Response:
    return json_response(user_view(await _service(request).user(principal, path_uuid(request, "user_id"))))


async def suspend_user(request: Request, principal: Principal) -> Response:
    await _service(request).suspend(principal, path_uuid(request, "user_id"))
    return no_content()


async def reinstate_user(request: Request, principal: Principal) -> Response:
    await _service(request).reinstate(principal, path_uuid(request, "user_id"))
    return no_content()


async def revoke_user_sessions(request: Request, principal: Principal) -> Response:
    await _service(request).revoke_sessions(principal, path_uuid(request, "user_id"))
    return no_content()


async def create_incident(request: Request, principal: Principal, body: CreateIncident) -> Response:
    incident = await _service(request).create_incident(
        principal, body.title, body.scope, body.mitigation, body.detected_at
    )
    return json_response(incident_view(incident), status=201)


async def list_incidents(request: Request, principal: Principal) -> Response:
    limit = LIMIT(request)
    incidents = await _service(request).incidents(principal, NUMBER_CURSOR(request), limit)
    next_cursor = str(incidents[-1].number) if len(incidents) == limit else None
    items = [incident_view(i) for i in incidents]
    return json_response(IncidentList(items=items, next_cursor=next_cursor))


async def get_incident(request: Request, principal: Principal) -> Response:
    found = await _service(request).incident(principal, path_uuid(request, "incident_id"))
    return json_response(incident_detail(found))


async def add_incident_entry(request: Request, principal: Principal, body: AddIncidentEntry) -> Response:
    entry = await _service(request).add_entry(
        principal, path_uuid(request, "incident_id"), body.kind, body.body
    )
    return json_response(entry_view(entry), status=201)


async def notify_incident_users(request: Request, principal: Principal, body: NotifyUsers) -> Response:
    notified = await _service(request).notify(principal, path_uuid(request, "incident_id"), body.user_ids)
    result = NotificationResult(
        notified=notified.notified,
        already_notified=notified.already_notified,
        notified_at=notified.notified_at,
    )
    return json_response(result)


async def list_audit(request: Request, principal: Principal) -> Response:
    limit = LIMIT(request)
    entries = await _service(request).audit_trail(principal, NUMBER_CURSOR(request), limit)
    next_cursor = str(entries[-1].seq) if len(entries) == limit else None
    return json_response(AuditList(items=[audit_view(e) for e in entries], next_cursor=next_cursor))


def build(resources: Resources) -> OperatorService:
    return OperatorService(resources.db, resources.clock, resources.sessions)


_U = "/v1/admin/users/{user_id}"
_I = "/v1/admin/incidents/{incident_id}"


def _admin(method: str, path: str, handler: Handler, summary: str, **options: Any) -> Endpoint:
    """An operators-only operation. Every one may answer 404: it is what anyone without the operator
    role gets (before validation, so a refused caller learns nothing of the API)."""
    errors = (404, *options.pop("errors", ()))
    return Endpoint(method, path, handler, summary, TAG, errors=errors, guard=_operators_only, **options)


MODULE = ServiceModule(
    "operator",
    [
        _admin(
            "GET",
            "/v1/admin/users",
            list_users,
            "Users' metadata and counts, by id, or the one account with an email (operators).",
            responses={200: AdminUserList},
            query=(LIMIT, ID_CURSOR, EMAIL),
        ),
        _admin(
            "GET",
            _U,
            get_user,
            "One user's metadata and counts (operators).",
            responses={200: AdminUserView},
        ),
        _admin(
            "POST",
            _U + "/suspend",
            suspend_user,
            "Suspend an account and end all its sessions at once (operators).",
            responses={204: None},
            errors=(409,),
        ),
        _admin(
            "POST",
            _U + "/reinstate",
            reinstate_user,
            "Lift a suspension (operators).",
            responses={204: None},
            errors=(409,),
        ),
        _admin(
            "POST",
            _U + "/sessions/revoke",
            revoke_user_sessions,
            "End every session of a user without suspending the account (operators).",
            responses={204: None},
        ),
        _admin(
            "POST",
            "/v1/admin/incidents",
            create_incident,
            "Open an incident in the append-only incident log (operators).",
            body=CreateIncident,
            responses={201: IncidentView},
        ),
        _admin(
            "GET",
            "/v1/admin/incidents",
            list_incidents,
            "Incidents, newest first (operators).",
            responses={200: IncidentList},
            query=(LIMIT, NUMBER_CURSOR),
        ),
        _admin(
            "GET",
            _I,
            get_incident,
            "One incident with its entries (operators).",
            responses={200: IncidentDetail},
        ),
        _admin(
            "POST",
            _I + "/entries",
            add_incident_entry,
            "Append an update, a mitigation step or a notification to an incident (operators).",
            body=AddIncidentEntry,
            responses={201: IncidentEntryView},
        ),
        _admin(
            "POST",
            _I + "/notifications",
            notify_incident_users,
            "E-mail a content-free security notice to affected users and record when (operators).",
            body=NotifyUsers,
            responses={200: NotificationResult},
        ),
        _admin(
            "GET",
            "/v1/admin/audit",
            list_audit,
            "The audit trail of operator actions, newest first (operators).",
            responses={200: AuditList},
            query=(LIMIT, NUMBER_CURSOR),
        ),
    ],
    build=build,
)
