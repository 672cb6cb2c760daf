"""`veil incidents list|show|open|note|notify`: the incident log of /v1/admin, through the same
service and the same input validation, audited as done by the command line."""

from __future__ import annotations

import argparse
import uuid
from datetime import datetime

from pydantic import ValidationError

from veil.commands.database import run_operator
from veil.commands.environment import configuration
from veil.commands.output import Subcommands, fail, note, print_json
from veil.commands.users import resolve_user
from veil.core.web.params import parse_uuid
from veil.operator.schemas import AddIncidentEntry, CreateIncident, IncidentList
from veil.operator.service import COMMAND_LINE, IncidentLog, Notified, OperatorService
from veil.operator.store import Incident
from veil.operator.views import incident_detail, incident_view

# Users per notification transaction: what one POST .../notifications accepts (NotifyUsers).
_NOTIFY_BATCH = 100


def _incident_id(text: str) -> uuid.UUID:
    incident_id = parse_uuid(text)
    if incident_id is None:
        fail(f"not an incident id: {text}")
    return incident_id


def _invalid(error: ValidationError) -> list[str]:
    """One line per bad option, named as on the command line."""
    return [
        "--" + "-".join(str(part) for part in detail["loc"]).replace("_", "-") + ": " + detail["msg"]
        for detail in error.errors(include_url=False, include_input=False)
    ]


def _line(incident: Incident) -> str:
    return f"#{incident.number:<4} {incident.detected_at:%Y-%m-%d %H:%M}Z  {incident.id}  {incident.title}"


def list_incidents(args: argparse.Namespace) -> int:
    settings = configuration(args)
    found = run_operator(settings, lambda service: service.incidents(COMMAND_LINE, None, args.limit))
    if args.json:
        print_json(IncidentList(items=[incident_view(i) for i in found], next_cursor=None))
    elif not found:
        note("no incidents")
    else:
        print("\n".join(_line(incident) for incident in found))
    return 0


def _describe(found: IncidentLog) -> str:
    incident = found.incident
    lines = [
        _line(incident),
        f"scope:      {incident.scope}",
        f"mitigation: {incident.mitigation}",
        f"notified:   {found.users_notified} user(s)",
    ]
    lines += [f"  {entry.created_at:%Y-%m-%d %H:%M}Z [{entry.kind}] {entry.body}" for entry in found.entries]
    return "\n".join(lines)


def show(args: argparse.Namespace) -> int:
    settings = configuration(args)
    incident_id = _incident_id(args.incident)
    found = run_operator(settings, lambda service: service.incident(COMMAND_LINE, incident_id))
    if args.json:
        print_json(incident_detail(found))
    else:
        print(_describe(found))
    return 0


def open_incident(args: argparse.Namespace) -> int:
    settings = configuration(args)
    try:
        spec = CreateIncident(
            title=args.title, scope=args.scope, mitigation=args.mitigation, detected_at=args.detected_at
        )
    except ValidationError as exc:
        fail(*_invalid(exc))
    incident = run_operator(
        settings,
        lambda service: service.create_incident(
            COMMAND_LINE, spec.title, spec.scope, spec.mitigation, spec.detected_at
        ),
    )
    print(incident.id)
    note(f"incident #{incident.number} opened")
    return 0


def add_note(args: argparse.Namespace) -> int:
    settings = configuration(args)
    incident_id = _incident_id(args.incident)
    try:
        entry = AddIncidentEntry(kind=args.kind, body=args.body)
    except ValidationError as exc:
        fail(*_invalid(exc))
    added = run_operator(
        settings, lambda service: service.add_entry(COMMAND_LINE, incident_id, entry.kind, entry.body)
    )
    note(f"entry {added.seq} ({added.kind}) added")
    return 0


def notify(args: argparse.Namespace) -> int:
    settings = configuration(args)
    incident_id = _incident_id(args.incident)

    async def tell(service: OperatorService) -> list[Notified]:
        user_ids = [await resolve_user(service, who) for who in args.users]
        return [
            await service.notify(COMMAND_LINE, incident_id, user_ids[start : start + _NOTIFY_BATCH])
            for start in range(0, len(user_ids), _NOTIFY_BATCH)
        ]

    batches = run_operator(settings, tell)
    notified = sum(batch.notified for batch in batches)
    already = sum(batch.already_notified for batch in batches)
    note(f"{notified} user(s) notified by email, {already} already told of this incident")
    return 0


def _timestamp(text: str) -> datetime:
    """An RFC 3339 time with its offset: an argparse type."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time like 2026-12-07T09:30:00+00:00: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time's offset (+00:00 or Z): {text!r}")
    return value


def _limit(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError(f"not a number from 1 to 200: {text!r}")
    return int(text)


def add_parser(commands: Subcommands) -> None:
    incidents = commands.add_parser("incidents", help="the incident log")
    actions = incidents.add_subparsers(dest="action", required=True)
    lister = actions.add_parser("list", help="incidents, newest first")
    lister.add_argument("--limit", type=_limit, default=50, metavar="N", help="at most N (default 50)")
    lister.add_argument("--json", action="store_true", help="as GET /v1/admin/incidents answers")
    lister.set_defaults(handler=list_incidents)

    shower = actions.add_parser("show", help="one incident with its entries")
    shower.add_argument("incident", metavar="INCIDENT-ID")
    shower.add_argument("--json", action="store_true", help="as GET /v1/admin/incidents/{id} answers")
    shower.set_defaults(handler=show)

    opener = actions.add_parser("open", help="open an incident; prints its id")
    opener.add_argument("--title", required=True)
    opener.add_argument("--scope", required=True, help="what data and which users are affected")
    opener.add_argument("--mitigation", required=True, help="what was done about it")
    opener.add_argument("--detected-at", type=_timestamp, help="when it became known (default: now)")
    opener.set_defaults(handler=open_incident)

    noter = actions.add_parser("note", help="append an update or a mitigation step")
    noter.add_argument("incident", metavar="INCIDENT-ID")
    noter.add_argument("body")
    noter.add_argument("--kind", choices=["update", "mitigation"], default="update")
    noter.set_defaults(handler=add_note)

    notifier = actions.add_parser("notify", help="e-mail the content-free security notice to users")
    notifier.add_argument("incident", metavar="INCIDENT-ID")
    notifier.add_argument("users", nargs="+", metavar="EMAIL-OR-USER-ID")
    notifier.set_defaults(handler=notify)
