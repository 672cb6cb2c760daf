"""`veil config check`: the environment (and `--env-file`) validated as the server validates it at
start, without starting anything: one line per problem and exit 1, or a short OK."""

from __future__ import annotations

import argparse

from veil.commands.environment import check
from veil.commands.output import Subcommands


def run_check(args: argparse.Namespace) -> int:
    settings = check(args.env_file)
    print(f"configuration OK ({settings.environment.value})")
    return 0


def add_parser(commands: Subcommands) -> None:
    config = commands.add_parser("config", help="the configuration")
    actions = config.add_subparsers(dest="action", required=True)
    actions.add_parser("check", help="validate it as the server does at start").set_defaults(
        handler=run_check
    )
