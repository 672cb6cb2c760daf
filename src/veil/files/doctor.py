"""Checking that the database and the object store agree, and repairing what does not.

Two things can go wrong, usually after one of them was restored from a backup without the other:
an object no row refers to (it costs space and is never served or swept), and a completed
attachment or a user's current backup whose object is gone (its downloads fail at the store).

Why the checks cannot mistake live traffic for damage: every row is written before its object
(a reservation precedes its upload, an export job row precedes its archive), and object keys are
random and never reused. So the bucket is listed *first*: an object in that listing without a row
afterwards has none, and never will. A completed row missing from the listing may have been
completed after it; it counts as missing only if the store confirms, object by object.

What the repair does, and why it is safe:
- an object without a row is deleted: nothing can reach it (downloads are presigned for rows only);
- a row whose object is gone is deleted: the bytes cannot come back from Veil's side, and without
  the row the attachment (or backup) answers 404 like a deleted one (instead of a download URL
  that fails at the store), and an attachment's size stops counting against its owner's quota.
  Restore the bucket first: a row deleted here does not come back if its object reappears later.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.core.blobstore import BlobStore, ListedObject
from veil.core.db import Database
from veil.files import inventory
from veil.files.inventory import StoredAttachment, StoredBackup


@dataclass(frozen=True)
class Findings:
    objects_without_rows: list[ListedObject]
    rows_without_objects: list[StoredAttachment]
    backups_without_objects: list[StoredBackup]
    # How many objects the bucket holds, how many of them a row refers to, and how many object
    # keys the rows name (whether or not the objects exist).
    objects: int
    referenced_objects: int
    rows: int

    @property
    def consistent(self) -> bool:
        return not (self.objects_without_rows or self.rows_without_objects or self.backups_without_objects)


class WrongDatabase(Exception):
    """The database refers to no object at all while the bucket holds some: it is probably not the
    one that goes with this bucket (a new one, not restored yet), and a repair would empty it."""


async def examine(db: Database, blobs: BlobStore) -> Findings:
    """Compare the bucket's listing with the rows that refer to objects (see the module doc)."""
    listed = await blobs.list_objects()
    async with db.transaction("doctor_examine") as conn:
        referenced = await inventory.referenced_object_keys(conn)
        completed = await inventory.completed_attachments(conn)
        backups = await inventory.current_backups(conn)
    in_store = {item.key for item in listed}

    async def gone(object_key: str) -> bool:
        return object_key not in in_store and await blobs.stat(object_key) is None

    return Findings(
        objects_without_rows=[item for item in listed if item.key not in referenced],
        rows_without_objects=[attachment for attachment in completed if await gone(attachment.object_key)],
        backups_without_objects=[backup for backup in backups if await gone(backup.object_key)],
        objects=len(listed),
        referenced_objects=len(in_store & referenced),
        rows=len(referenced),
    )


async def repair(db: Database, blobs: BlobStore, findings: Findings) -> None:
    """Delete the objects without rows and the rows without objects that `examine` found.

    Raises WrongDatabase, deleting nothing, if objects are there but no row refers to any."""
    if findings.objects and not findings.rows:
        raise WrongDatabase
    if findings.objects_without_rows:
        await blobs.delete([item.key for item in findings.objects_without_rows])
    if findings.rows_without_objects or findings.backups_without_objects:
        async with db.transaction("doctor_forget_rows") as conn:
            await inventory.delete_attachments(conn, [row.id for row in findings.rows_without_objects])
            await inventory.delete_backups(conn, [row.object_key for row in findings.backups_without_objects])
