"""`veil invites create [--uses N] [--expires 7d]`: an invite code for VEIL_REGISTRATION=invite,
printed once (only its hash is kept)."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

from veil.auth.signup import create_invite
from veil.commands.database import run_on_database
from veil.commands.environment import configuration
from veil.commands.output import Subcommands, note
from veil.core.clock import SystemClock

_DURATION = re.compile(r"^([1-9][0-9]{0,4})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    """`30m`, `12h`, `7d`: an argparse type."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration like 30m, 12h or 7d: {text!r}")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def use_count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"not a number from 1 to 10000: {text!r}")
    return int(text)


def make_invite(args: argparse.Namespace) -> int:
    settings = configuration(args)
    code = run_on_database(
        settings, lambda db: create_invite(db, SystemClock(), uses=args.uses, lifetime=args.expires)
    )
    print(code)
    note(f"invite code for {args.uses} sign-up(s), valid for {args.expires}")
    return 0


def add_parser(commands: Subcommands) -> None:
    invites = commands.add_parser("invites", help="invite codes for invite-only registration")
    actions = invites.add_subparsers(dest="action", required=True)
    creator = actions.add_parser("create", help="print a new invite code")
    creator.add_argument("--uses", type=use_count, default=1, metavar="N", help="sign-ups it allows")
    creator.add_argument("--expires", type=duration, default=timedelta(days=7), help="e.g. 12h, 7d")
    creator.set_defaults(handler=make_invite)
