"""GDPR completeness by construction: every table is either in the personal-data registry or
listed as holding none, every column that can refer to a user is accounted for, and
docs/privacy.md says what the code does."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from veil.account.privacy_doc import render
from veil.account.registry import NOT_PERSONAL, REGISTRY, by_table

# A column with one of these names holds a user's id, or a session (= device) id, whether or not a
# foreign key says so.
USER_COLUMN_NAMES = {
    "user_id",
    "owner_id",
    "sender_id",
    "sender_user_id",
    "actor_id",
    "actor_device_id",
    "subject_id",
    "invited_by",
    "operator_id",
    "created_by",
    "target_user_id",
    "session_id",
    "device_id",
    "sender_device_id",
    "recipient_device_id",
    "direct_pair",
}


async def user_columns(db: asyncpg.Connection[asyncpg.Record]) -> dict[str, set[str]]:
    """Columns that refer to a user, by table: by foreign key to users/sessions, or by name."""
    found: dict[str, set[str]] = {}
    for row in await db.fetch(
        """SELECT kcu.table_name, kcu.column_name
           FROM information_schema.table_constraints tc
           JOIN information_schema.key_column_usage kcu
             ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
           JOIN information_schema.constraint_column_usage ccu
             ON ccu.constraint_name = tc.constraint_name AND ccu.table_schema = tc.table_schema
           WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = 'public'
             AND ccu.table_name IN ('users', 'sessions', 'device_keys')"""
    ):
        found.setdefault(row["table_name"], set()).add(row["column_name"])
    for row in await db.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
    ):
        if row["column_name"] in USER_COLUMN_NAMES:
            found.setdefault(row["table_name"], set()).add(row["column_name"])
    return found


async def test_every_table_is_classified(db: asyncpg.Connection[asyncpg.Record]) -> None:
    tables = {
        row["table_name"]
        for row in await db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }
    unclassified = tables - set(by_table()) - set(NOT_PERSONAL)
    assert not unclassified, f"add these tables to veil.account.registry: {sorted(unclassified)}"
    assert not set(by_table()) & set(NOT_PERSONAL)
    assert set(by_table()) | set(NOT_PERSONAL) <= tables, "the registry names tables that do not exist"


async def test_every_user_reference_is_in_the_registry(db: asyncpg.Connection[asyncpg.Record]) -> None:
    registry = by_table()
    for table, columns in (await user_columns(db)).items():
        assert table in registry, f"{table} refers to users ({sorted(columns)}) but is not in the registry"
        missing = columns - set(registry[table].user_columns)
        assert not missing, f"{table}: list {sorted(missing)} in its registry entry"


async def test_registry_columns_exist(db: asyncpg.Connection[asyncpg.Record]) -> None:
    for entry in REGISTRY:
        columns = {
            row["column_name"]
            for row in await db.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1", entry.table
            )
        }
        assert set(entry.user_columns) <= columns, entry.table


def test_privacy_document_matches_the_code() -> None:
    document = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"
    assert document.read_text() == render(), (
        "docs/privacy.md is stale: python -m veil.account.privacy_doc > docs/privacy.md"
    )
