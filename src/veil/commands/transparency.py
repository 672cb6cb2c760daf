"""`veil transparency verify` (rebuild the key-transparency log and check every signed head),
`veil transparency rotate-key FILE` and `veil transparency keys FILE`."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from veil.commands.database import run_on_database
from veil.commands.environment import configuration
from veil.commands.keys import write_key_file
from veil.commands.output import Subcommands, fail, note
from veil.core.db import Database
from veil.transparency.audit import verify_log
from veil.transparency.head import LogKeys, keys_for


def verify(args: argparse.Namespace) -> int:
    """Rebuild the tree from the database and check every stored head: exit 1 naming the first
    leaf, node or head that does not hold."""
    settings = configuration(args)
    public_keys = keys_for(settings).public_keys

    async def check(db: Database) -> tuple[int, int, str | None]:
        async with db.transaction("transparency_verify", isolation="repeatable_read") as conn:
            # The whole log is read in one go; the statement timeout is for requests.
            await conn.execute("SET LOCAL statement_timeout = 0")
            report = await verify_log(conn, public_keys)
        return report.leaves, report.heads, report.problem

    leaves, heads, problem = run_on_database(settings, check)
    if problem is not None:
        fail(f"transparency log: {problem}")
    note(f"transparency log: {leaves} leaves and {heads} signed heads verified")
    return 0


def rotate_key(args: argparse.Namespace) -> int:
    """Make a new active log key in FILE (created if missing), endorsed by the one it replaces;
    older keys stay, public only. The same as `veil keys generate --rotate --only log` for a file
    of any name."""
    path: Path = args.file
    try:
        write_key_file(path, LogKeys.generate_file, rotate=path.exists())
        active = LogKeys.load(path).public_key
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"{path}: not a transparency key file ({exc})")
    note(f"{path}: new active key {active.hex()}")
    return 0


def print_keys(args: argparse.Namespace) -> int:
    """Every public key of FILE, the active one first, base64: what to publish."""
    try:
        keys = LogKeys.load(args.file)
    except ValueError as exc:
        fail(str(exc))
    for key in keys.public_keys:
        print(base64.b64encode(key).decode())
    return 0


def add_parser(commands: Subcommands) -> None:
    transparency = commands.add_parser("transparency", help="the key-transparency log")
    actions = transparency.add_subparsers(dest="action", required=True)
    actions.add_parser("verify", help="rebuild the log's tree and check every signed head").set_defaults(
        handler=verify
    )
    for action, text, handler in (
        ("rotate-key", "make a new active log key in FILE (keeps the old ones, public only)", rotate_key),
        ("keys", "print every public key of FILE, the active one first", print_keys),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("file", type=Path)
        parser.set_defaults(handler=handler)
