"""The `veil` command: running Veil (`run`, `serve`), its database (`migrate`), its keys and
configuration (`keys generate`, `config check`), the operator's work (`users`, `sessions`,
`incidents`, `operator`, `invites`, `transparency`), and backups (`backup`, `restore`, `doctor`).
`veil COMMAND --help` tells more; each subcommand lives in its own module under `veil.commands`.
Exit status: 0 done, 1 a problem found (each on one line of stderr) or nothing found, 2 a usage
error."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from veil.commands import (
    backup,
    config_check,
    doctor,
    incidents,
    invites,
    keys,
    migrate,
    restore,
    roles,
    serving,
    transparency,
    users,
)
from veil.commands.output import Failed, report_problems

_SUBCOMMANDS = (
    serving,
    migrate,
    config_check,
    keys,
    users,
    incidents,
    roles,
    invites,
    transparency,
    backup,
    restore,
    doctor,
)


def _version() -> str:
    try:
        return version("veil")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veil", description=__doc__)
    parser.add_argument("--version", action="version", version=f"veil {_version()}")
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="dotenv file (if present)")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in _SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except Failed as failure:
        report_problems(failure.problems)
        status = 1
    raise SystemExit(status)


if __name__ == "__main__":
    main()
