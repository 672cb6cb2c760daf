"""`veil restore DIR [--force]`: a backup made by `veil backup` onto the configured database, which
must be new and empty (`--force` replaces what it holds), then what a restored database must do
before any service starts on it:

- bring its schema to this Veil's (the pending migrations, if the backup is older);
- retire every one-time prekey still on offer (veil.keys.restored: some were handed out after the
  backup, and none may be handed out twice);
- say whether the key files and the bucket are the ones the backup describes.

Sessions, device queues and conversations are left as the backup has them (docs/operations.md says
what that means for users); run `veil doctor` once the bucket is restored as well.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from veil.commands import backup_manifest
from veil.commands.backup import add_pg_bin
from veil.commands.backup_manifest import DUMP, Manifest
from veil.commands.database import operator_database_url, run_on_database
from veil.commands.environment import configuration
from veil.commands.object_store import bucket_listing, object_store
from veil.commands.output import Failed, Subcommands, fail, note
from veil.commands.postgres_tools import find_tool, run_tool
from veil.core.config import Settings
from veil.core.migrations import MigrationError, apply_migrations
from veil.keys.restored import RetiredPrekeys, forget_unsafe_prekeys


async def _table_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            """SELECT count(*) FROM pg_catalog.pg_tables
               WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"""
        )
        return count
    finally:
        await conn.close()


def _require_empty(database_url: str, force: bool) -> None:
    try:
        tables = asyncio.run(_table_count(database_url))
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"the database is unavailable ({type(exc).__name__}): create it first, empty")
    if tables and not force:
        fail(
            f"the database is not empty ({tables} tables): restore onto a new, empty database, "
            "or add --force to replace everything it holds"
        )


def _apply_migrations(database_url: str) -> list[int]:
    try:
        return asyncio.run(apply_migrations(database_url))
    except MigrationError as exc:
        fail(f"the restored database does not fit this Veil: {exc}")


def _key_warnings(manifest: Manifest, settings: Settings) -> list[str]:
    """What differs between the key files configured now and those of the backup."""
    described = (
        (
            manifest.keys.token,
            "VEIL_JWT_KEYS_FILE",
            settings.jwt_keys_file,
            "tokens signed by a missing key are refused",
        ),
        (
            manifest.keys.log,
            "VEIL_TRANSPARENCY_KEYS_FILE",
            settings.transparency_keys_file,
            "signed heads of a missing key cannot be verified",
        ),
    )
    warnings = []
    for then, variable, path, consequence in described:
        now = backup_manifest.key_file(path)
        if then is not None and (now is None or now.sha256 != then.sha256):
            warnings.append(
                f"{variable} is not the file backed up ({then.path}, sha256 {then.sha256[:16]}...): "
                f"if it lacks keys the backup's had, {consequence}"
            )
    return warnings


def _bucket_warning(manifest: Manifest, settings: Settings) -> str | None:
    try:
        with object_store(settings) as store:
            present = {item.key for item in bucket_listing(store)}
    except Failed as failure:
        # The database is restored by now: say why the bucket went unchecked, but do not fail.
        return f"bucket not checked ({failure.problems[0]}): run `veil doctor` once it is reachable"
    missing = [item for item in manifest.bucket.objects if item.key not in present]
    if not missing:
        return None
    return (
        f"{len(missing)} of the backup's {len(manifest.bucket.objects)} objects are not in bucket "
        f"{settings.s3_bucket}: restore the bucket, then run `veil doctor`"
    )


def restore(args: argparse.Namespace) -> int:
    settings = configuration(args)
    database_url = operator_database_url(settings)
    pg_restore = find_tool("pg_restore", args.pg_bin)
    directory: Path = args.directory
    manifest = backup_manifest.read(directory)
    _require_empty(database_url, args.force)
    options = ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
    if args.force:
        options += ["--clean", "--if-exists"]
    run_tool(pg_restore, [*options, str(directory / DUMP)], database_url)
    applied = _apply_migrations(database_url)
    retired: RetiredPrekeys = run_on_database(
        settings, lambda db: forget_unsafe_prekeys(db, datetime.now(UTC))
    )
    print(
        f"restored the database of {manifest.created_at.isoformat()}; {len(applied)} migrations applied; "
        f"{retired.classical} one-time prekeys and {retired.post_quantum} ML-KEM one-time prekeys "
        f"of {retired.devices} devices retired (devices upload new ones at their next sync)"
    )
    for warning in [*_key_warnings(manifest, settings), _bucket_warning(manifest, settings)]:
        if warning is not None:
            note(f"warning: {warning}")
    return 0


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser("restore", help="restore a `veil backup` onto a new, empty database")
    parser.add_argument("directory", type=Path, metavar="DIR", help="made by `veil backup`")
    parser.add_argument(
        "--force", action="store_true", help="replace the contents of a database that is not empty"
    )
    add_pg_bin(parser)
    parser.set_defaults(handler=restore)
