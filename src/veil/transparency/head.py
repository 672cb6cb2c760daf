"""Signed tree heads and the log's Ed25519 signing keys.

A head's signature covers `veil/tree-head/v1` || tree_size (u64 BE) || timestamp in ms (u64 BE)
|| root_hash (32), as API.md says.

The keys come from `VEIL_TRANSPARENCY_KEYS_FILE`, a JSON file `{"active": kid, "keys": [{"kid",
"public_key", "private_key"?, "endorsement"?}]}` (base64 raw keys; `kid` is the hex of the first 8
bytes of SHA-256 of the public key). Only the active key needs its private half. Rotation: `veil
transparency rotate-key` makes a new active key, *endorsed* by the one it replaces (Ed25519 by the
old key over `veil/log-key/v1` || the new public key), and keeps the old ones as public keys only,
so heads they signed still verify and clients that pinned an old key can follow the chain of
endorsements to the new one (docs/adr/0019). Generated under the data directory in development and
tests, like the access-token keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from veil.core.config import Settings

HEAD_CONTEXT = b"veil/tree-head/v1"
ENDORSEMENT_CONTEXT = b"veil/log-key/v1"


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    signature: bytes
    public_key: bytes


def head_payload(tree_size: int, timestamp_ms: int, root_hash: bytes) -> bytes:
    if len(root_hash) != 32:
        raise ValueError("a root hash is 32 bytes")
    return HEAD_CONTEXT + tree_size.to_bytes(8, "big") + timestamp_ms.to_bytes(8, "big") + root_hash


def verify_head(head: TreeHead, public_key: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            head.signature, head_payload(head.tree_size, head.timestamp_ms, head.root_hash)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).digest()[:8].hex()


def _raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Endorsement:
    """`previous_key` vouching for `public_key`, its successor: a signature over
    `veil/log-key/v1` || public_key by the previous key."""

    public_key: bytes
    previous_key: bytes
    signature: bytes

    def verifies(self) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.previous_key).verify(
                self.signature, ENDORSEMENT_CONTEXT + self.public_key
            )
        except (InvalidSignature, ValueError):
            return False
        return True


class LogKeys:
    """The active signing key, every public key the log ever signed with, and the endorsements
    that lead from each old key to its successor (oldest first)."""

    def __init__(
        self,
        active: Ed25519PrivateKey,
        public_keys: list[bytes],
        endorsements: list[Endorsement] | None = None,
    ) -> None:
        self._active = active
        self.public_key = _raw_public(active)
        self.public_keys = [self.public_key, *(k for k in public_keys if k != self.public_key)]
        self.endorsements = list(endorsements or [])

    def sign(self, tree_size: int, timestamp_ms: int, root_hash: bytes) -> TreeHead:
        signature = self._active.sign(head_payload(tree_size, timestamp_ms, root_hash))
        return TreeHead(tree_size, timestamp_ms, root_hash, signature, self.public_key)

    @classmethod
    def load(cls, path: Path) -> LogKeys:
        """Refuse a file that is not well formed (at start, like the token keys)."""
        try:
            document = json.loads(path.read_text())
            entries = {entry["kid"]: entry for entry in document["keys"]}
            active_entry = entries[document["active"]]
            active = Ed25519PrivateKey.from_private_bytes(base64.b64decode(active_entry["private_key"]))
            publics = [base64.b64decode(entry["public_key"], validate=True) for entry in entries.values()]
            by_kid = dict(zip(entries, publics, strict=True))
            endorsements = [
                Endorsement(
                    by_kid[kid],
                    by_kid[entry["endorsement"]["by"]],
                    base64.b64decode(entry["endorsement"]["signature"], validate=True),
                )
                for kid, entry in entries.items()
                if "endorsement" in entry
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a transparency key file ({exc})") from None
        for kid, public in by_kid.items():
            if len(public) != 32 or key_id(public) != kid:
                raise ValueError(f"{path}: key {kid} does not match its public key")
        if _raw_public(active) != base64.b64decode(active_entry["public_key"]):
            raise ValueError(f"{path}: the active private key does not match its public key")
        for endorsement in endorsements:
            if not endorsement.verifies():
                endorsed = key_id(endorsement.public_key)
                raise ValueError(f"{path}: the endorsement of key {endorsed} does not verify")
        return cls(active, publics, endorsements)

    @staticmethod
    def generate_file(path: Path, previous: Path | None = None) -> None:
        """Write a key file whose active key is new; the keys of `previous` stay, public only, and
        its active key (if it has its private half) endorses the new one."""
        keys: list[dict[str, object]] = []
        private = Ed25519PrivateKey.generate()
        public = _raw_public(private)
        kid = key_id(public)
        new_entry: dict[str, object] = {
            "kid": kid,
            "public_key": base64.b64encode(public).decode(),
            "private_key": base64.b64encode(private.private_bytes_raw()).decode(),
        }
        if previous is not None and previous.exists():
            document = json.loads(previous.read_text())
            for entry in document["keys"]:
                keys.append({name: value for name, value in entry.items() if name != "private_key"})
                if entry["kid"] == document["active"] and "private_key" in entry:
                    retiring = Ed25519PrivateKey.from_private_bytes(base64.b64decode(entry["private_key"]))
                    signature = retiring.sign(ENDORSEMENT_CONTEXT + public)
                    new_entry["endorsement"] = {
                        "by": entry["kid"],
                        "signature": base64.b64encode(signature).decode(),
                    }
        keys.append(new_entry)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(json.dumps({"active": kid, "keys": keys}))


def ensure_keys_file(path: Path) -> Path:
    """`path`, generated first if missing. Processes that start together on one data directory
    may race: the file appears whole (a hard link of a finished file) or not at all."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        LogKeys.generate_file(draft)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            draft.unlink()
    return path


def keys_for(settings: Settings) -> LogKeys:
    """The configured keys; outside production, those of the data directory when none is set."""
    path = settings.transparency_keys_file
    if path is None:
        if settings.is_production:
            raise ValueError("VEIL_TRANSPARENCY_KEYS_FILE is required in production")
        path = ensure_keys_file(settings.data_dir / "transparency-keys.json")
    return LogKeys.load(path)
