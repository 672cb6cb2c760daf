"""`veil users find EMAIL`, `veil users suspend|unsuspend USER` and `veil sessions revoke USER`:
the user operations of /v1/admin, through the same service, audited as done by the command line.
USER is an account's id or its email."""

from __future__ import annotations

import argparse
import uuid

from veil.auth.policy import normalize_email
from veil.commands.database import run_operator
from veil.commands.environment import configuration
from veil.commands.output import Subcommands, fail, note, print_json
from veil.core.problems import Problem
from veil.core.web.params import parse_uuid
from veil.operator.service import COMMAND_LINE, OperatorService
from veil.operator.store import UserMetadata
from veil.operator.views import user_view


def email_address(text: str) -> str:
    try:
        return normalize_email(text)
    except Problem:
        fail(f"not a valid email address: {text}")


async def resolve_user(service: OperatorService, who: str) -> uuid.UUID:
    """The id USER names: itself if it is one, else the account with that email."""
    user_id = parse_uuid(who)
    if user_id is not None:
        return user_id
    return (await service.find_user(COMMAND_LINE, email_address(who))).id


def _describe(user: UserMetadata) -> str:
    last_seen = user.last_seen_at.isoformat() if user.last_seen_at else "never"
    rows = [
        ("user", str(user.id)),
        ("email", user.email + ("" if user.email_verified else " (not verified)")),
        ("status", user.status),
        ("role", user.role),
        ("created", user.created_at.isoformat()),
        ("last seen", last_seen),
        ("sessions", f"{user.active_sessions} active"),
        ("devices", str(user.devices)),
        ("conversations", str(user.conversations)),
        ("messages sent", str(user.messages_sent)),
        ("attachments", str(user.attachments)),
    ]
    return "\n".join(f"{label:<14} {value}" for label, value in rows)


def find(args: argparse.Namespace) -> int:
    settings = configuration(args)
    email = email_address(args.email)

    async def look_up(service: OperatorService) -> UserMetadata:
        try:
            return await service.find_user(COMMAND_LINE, email)
        except Problem as problem:
            if problem.status == 404:
                fail(f"no account with the email {email}")
            raise

    user = run_operator(settings, look_up)
    if args.json:
        print_json(user_view(user))
    else:
        print(_describe(user))
    return 0


def suspend(args: argparse.Namespace) -> int:
    settings = configuration(args)

    async def change(service: OperatorService) -> uuid.UUID:
        user_id = await resolve_user(service, args.user)
        if args.action == "suspend":
            await service.suspend(COMMAND_LINE, user_id)
        else:
            await service.reinstate(COMMAND_LINE, user_id)
        return user_id

    user_id = run_operator(settings, change)
    if args.action == "suspend":
        note(f"user {user_id} is suspended; every session of it has ended")
    else:
        note(f"user {user_id} may sign in again")
    return 0


def revoke_sessions(args: argparse.Namespace) -> int:
    settings = configuration(args)

    async def revoke(service: OperatorService) -> uuid.UUID:
        user_id = await resolve_user(service, args.user)
        await service.revoke_sessions(COMMAND_LINE, user_id)
        return user_id

    user_id = run_operator(settings, revoke)
    note(f"every session of user {user_id} has ended")
    return 0


def add_parser(commands: Subcommands) -> None:
    users = commands.add_parser("users", help="find, suspend and unsuspend accounts")
    actions = users.add_subparsers(dest="action", required=True)
    finder = actions.add_parser("find", help="an account's metadata and counts, by email")
    finder.add_argument("email")
    finder.add_argument("--json", action="store_true", help="as GET /v1/admin/users?email= answers")
    finder.set_defaults(handler=find)
    for action, text in (
        ("suspend", "suspend the account and end all its sessions"),
        ("unsuspend", "lift a suspension (the user signs in again)"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("user", metavar="EMAIL-OR-USER-ID")
        parser.set_defaults(handler=suspend)

    sessions = commands.add_parser("sessions", help="end a user's sessions")
    session_actions = sessions.add_subparsers(dest="action", required=True)
    revoker = session_actions.add_parser("revoke", help="end every session of the user (not suspended)")
    revoker.add_argument("user", metavar="EMAIL-OR-USER-ID")
    revoker.set_defaults(handler=revoke_sessions)
