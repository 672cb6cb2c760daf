"""`veil doctor [--fix]`: whether the database and the bucket agree (objects without rows, completed
attachments and current backups without objects), and with `--fix` the repair that
veil.files.doctor explains. Exit status 1 while a disagreement is left unrepaired."""

from __future__ import annotations

import argparse
import json
from typing import Any

import asyncpg

from veil.commands.database import run_on_database
from veil.commands.environment import configuration
from veil.commands.object_store import object_store
from veil.commands.output import Subcommands, fail, note
from veil.core.db import Database
from veil.core.problems import BackendUnavailable
from veil.files.doctor import Findings, WrongDatabase, examine, repair


def _as_json(bucket: str, findings: Findings, fixed: bool) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "objects": findings.objects,
        "objects_with_rows": findings.referenced_objects,
        "objects_without_rows": [{"key": o.key, "size": o.size} for o in findings.objects_without_rows],
        "rows_without_objects": [
            {"attachment_id": str(a.id), "object_key": a.object_key, "size": a.size}
            for a in findings.rows_without_objects
        ],
        "backups_without_objects": [
            {"object_key": b.object_key, "size": b.size} for b in findings.backups_without_objects
        ],
        "fixed": fixed,
    }


def _describe(bucket: str, findings: Findings) -> str:
    lines = [f"bucket {bucket}: {findings.objects} objects, {findings.referenced_objects} with a row"]
    lines += [f"object without a row: {o.key} ({o.size} bytes)" for o in findings.objects_without_rows]
    lines += [
        f"attachment without its object: {a.id} (object {a.object_key})"
        for a in findings.rows_without_objects
    ]
    lines += [f"backup without its object: object {b.object_key}" for b in findings.backups_without_objects]
    return "\n".join(lines)


def doctor(args: argparse.Namespace) -> int:
    settings = configuration(args)
    with object_store(settings) as store:

        async def check(db: Database) -> Findings:
            try:
                await store.ping()
            except BackendUnavailable:
                fail(f"the object store is unavailable (bucket {store.bucket})")
            try:
                findings = await examine(db, store)
            except asyncpg.UndefinedTableError:
                fail("this database has no Veil tables: restore a backup onto it first (`veil restore`)")
            if args.fix and not findings.consistent:
                try:
                    await repair(db, store, findings)
                except WrongDatabase:
                    fail(
                        f"this database refers to no object, bucket {store.bucket} holds "
                        f"{findings.objects}: is it the database that goes with this bucket? "
                        "Nothing was deleted"
                    )
            return findings

        findings = run_on_database(settings, check)
    fixed = args.fix and not findings.consistent
    if args.json:
        print(json.dumps(_as_json(settings.s3_bucket, findings, fixed), indent=2))
    else:
        print(_describe(settings.s3_bucket, findings))
    if fixed:
        note(
            f"deleted {len(findings.objects_without_rows)} objects without rows and "
            f"{len(findings.rows_without_objects)} attachment rows and "
            f"{len(findings.backups_without_objects)} backup rows without objects"
        )
    return 0 if findings.consistent or fixed else 1


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "doctor", help="compare the attachment and backup rows with the bucket's objects (repair: --fix)"
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="delete objects without rows, and attachment and backup rows whose object is gone",
    )
    parser.add_argument("--json", action="store_true", help="the findings as JSON")
    parser.set_defaults(handler=doctor)
