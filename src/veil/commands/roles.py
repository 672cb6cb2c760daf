"""`veil operator grant|revoke EMAIL`: the only way to give or take away the operator role, from a
shell with the database's address, never through the API. Recorded in the audit trail."""

from __future__ import annotations

import argparse

from veil.commands.database import run_on_database
from veil.commands.environment import configuration
from veil.commands.output import Subcommands, fail, note
from veil.commands.users import email_address
from veil.core.clock import SystemClock
from veil.operator.service import set_role


def change_role(args: argparse.Namespace) -> int:
    settings = configuration(args)
    canonical = email_address(args.email)
    grant = args.action == "grant"
    user_id = run_on_database(
        settings, lambda db: set_role(db, SystemClock(), canonical, "operator" if grant else "user")
    )
    if user_id is None:
        fail(f"no account with the email {canonical}")
    note(f"{canonical} (user {user_id}) is now {'an operator' if grant else 'not an operator'}")
    return 0


def add_parser(commands: Subcommands) -> None:
    operator = commands.add_parser("operator", help="grant or revoke the operator role")
    actions = operator.add_subparsers(dest="action", required=True)
    for action, text in (("grant", "make the account an operator"), ("revoke", "take the role away")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("email", help="the account's email")
        parser.set_defaults(handler=change_role)
