"""The manifest of a backup directory (`manifest.json`): what the database dump is, which objects
the bucket held, and the fingerprints of the key files. It never holds a key, a secret or a row.

The objects and keys are listed, not copied: the bucket is backed up by the object store's own means
(replication, versioning, `mc mirror`), and the key files with the other secrets. The manifest lets
the operator check those copies against the moment of the dump.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from veil.commands.output import fail
from veil.core.blobstore import ListedObject

MANIFEST = "manifest.json"
DUMP = "database.dump"
FORMAT: Literal["veil-backup/1"] = "veil-backup/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseDump(_Strict):
    file: str
    format: Literal["pg_dump custom"] = "pg_dump custom"
    bytes: int
    sha256: str


class BucketObject(_Strict):
    key: str
    size: int
    etag: str


class Bucket(_Strict):
    name: str
    objects: list[BucketObject]


class KeyFile(_Strict):
    """A key file as it was at the backup: its path and the SHA-256 of its bytes."""

    path: str
    sha256: str


class KeyFiles(_Strict):
    """The key files the configuration named (None: not configured)."""

    token: KeyFile | None  # VEIL_JWT_KEYS_FILE
    log: KeyFile | None  # VEIL_TRANSPARENCY_KEYS_FILE


class Manifest(_Strict):
    format: Literal["veil-backup/1"] = FORMAT
    created_at: datetime
    veil_version: str
    database: DatabaseDump
    bucket: Bucket
    keys: KeyFiles


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_file(path: Path | None) -> KeyFile | None:
    if path is None:
        return None
    try:
        return KeyFile(path=str(path), sha256=file_sha256(path))
    except OSError as exc:
        fail(f"cannot read the key file {path} ({exc.strerror})")


def bucket(name: str, listing: list[ListedObject]) -> Bucket:
    return Bucket(name=name, objects=[BucketObject(key=o.key, size=o.size, etag=o.etag) for o in listing])


def write(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")


def read(directory: Path) -> Manifest:
    """The directory's manifest, with its dump checked against it; one line if anything is off."""
    try:
        manifest = Manifest.model_validate_json((directory / MANIFEST).read_bytes())
    except OSError as exc:
        fail(f"no backup in {directory}: cannot read {MANIFEST} ({exc.strerror})")
    except ValidationError:
        fail(f"{directory / MANIFEST} is not a Veil backup manifest ({FORMAT})")
    dump = directory / DUMP
    try:
        matches = file_sha256(dump) == manifest.database.sha256
    except OSError as exc:
        fail(f"cannot read {dump} ({exc.strerror})")
    if not matches:
        fail(f"{dump} does not match its manifest: damaged or replaced, refusing to restore it")
    return manifest
