"""The database password reaches pg_dump and pg_restore through their environment, never their
command line (which every local user can read in `ps`)."""

from __future__ import annotations

from veil.commands.postgres_tools import without_password


def test_the_password_moves_from_the_url_to_the_environment() -> None:
    url, env = without_password("postgresql://veil:p%40ss%3Aw0rd@db.internal:5432/veil?sslmode=require")
    assert url == "postgresql://veil@db.internal:5432/veil?sslmode=require"
    assert env == {"PGPASSWORD": "p@ss:w0rd"}


def test_a_urlwithout_password_is_left_alone() -> None:
    socket_url = "postgresql://postgres@/veil?host=/tmp/run&port=5432"
    assert without_password(socket_url) == (socket_url, {})
