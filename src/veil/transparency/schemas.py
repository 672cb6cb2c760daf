"""Wire models of the key-transparency API. Hashes, leaves, keys and signatures travel as base64
of their raw bytes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from veil.core.binary import Base64Bytes
from veil.core.wire import ResponseModel
from veil.transparency.leaf import LEAF_SIZE

Hash = Annotated[bytes, Base64Bytes(32)]
LeafBytes = Annotated[bytes, Base64Bytes(LEAF_SIZE)]


class KeyEndorsement(ResponseModel):
    public_key: Annotated[bytes, Base64Bytes(32)] = Field(description="A key the log rotated to.")
    previous_key: Annotated[bytes, Base64Bytes(32)] = Field(description="The key it replaced.")
    signature: Annotated[bytes, Base64Bytes(64)] = Field(
        description="Ed25519 by `previous_key` over `veil/log-key/v1` || public_key."
    )


class LogKey(ResponseModel):
    public_key: Annotated[bytes, Base64Bytes(32)] = Field(description="The log's Ed25519 public key.")
    endorsements: list[KeyEndorsement] = Field(
        default_factory=list,
        description="Each rotation of the log key, oldest first: a client that pinned an older key"
        " follows them to `public_key`.",
    )


class SignedTreeHead(ResponseModel):
    tree_size: int = Field(ge=0)
    root_hash: Hash
    timestamp: int = Field(ge=0, description="Milliseconds since the Unix epoch.")
    signature: Annotated[bytes, Base64Bytes(64)] = Field(
        description="Ed25519 by the log key over `veil/tree-head/v1` || tree_size (u64 BE) ||"
        " timestamp (u64 BE) || root_hash."
    )


class LogEntry(ResponseModel):
    index: int = Field(ge=0)
    leaf: LeafBytes


class LogEntries(ResponseModel):
    items: list[LogEntry]
    # The `start` of the next page; null once the end of the log (as committed) is reached.
    next_cursor: str | None


class InclusionProof(ResponseModel):
    leaf_index: int = Field(ge=0)
    leaf: LeafBytes
    tree_size: int = Field(ge=1)
    audit_path: list[Hash]


class ConsistencyProof(ResponseModel):
    first: int = Field(ge=0)
    second: int = Field(ge=0)
    proof: list[Hash]
