"""Byte-level encodings shared by the client modules: wire base64, UUIDs, length-prefixed fields,
and typed reads from JSON-shaped state.

Everything here is strict on input, because a lenient decoder is how two parties end up
authenticating different bytes while believing they agree.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import uuid
from collections.abc import Mapping
from typing import Any

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


def b64encode(raw: bytes) -> str:
    """Standard base64 with padding, the API's encoding for every binary field."""
    return base64.b64encode(raw).decode("ascii")


def b64decode(value: object, *, size: int | None = None, field: str = "value") -> bytes:
    """Decode canonical standard base64 (padding required), optionally of an exact length."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{field} is not standard base64 with padding") from None
    if base64.b64encode(raw).decode("ascii") != value:
        raise ValueError(f"{field} is not canonical base64")
    if size is not None and len(raw) != size:
        raise ValueError(f"{field} must decode to {size} bytes, not {len(raw)}")
    return raw


def uuid_bytes(value: str, *, field: str = "id") -> bytes:
    """The 16 bytes of a UUID string, so that case or hyphenation cannot change what is authenticated."""
    try:
        return uuid.UUID(value).bytes
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"{field} must be a UUID string") from None


def uuid_str(raw: bytes) -> str:
    """The canonical (lower-case, hyphenated) string of 16 UUID bytes."""
    return str(uuid.UUID(bytes=raw))


def canonical_uuid(value: str, *, field: str = "id") -> str:
    """A UUID string in canonical form; used for dictionary keys so lookups ignore spelling."""
    return uuid_str(uuid_bytes(value, field=field))


def u32(value: int) -> bytes:
    """A 32-bit big-endian unsigned integer."""
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    """A 64-bit big-endian unsigned integer."""
    return struct.pack(">Q", value)


def length_prefixed(*fields: bytes) -> bytes:
    """Concatenate fields, each preceded by its 32-bit length: no two field lists share an encoding."""
    return b"".join(u32(len(field)) + field for field in fields)


def read_str(data: Mapping[str, Any], key: str) -> str:
    """A required string member of a JSON object."""
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def read_int(data: Mapping[str, Any], key: str, *, maximum: int = U64_MAX) -> int:
    """A required non-negative integer member of a JSON object (booleans are not integers)."""
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise ValueError(f"{key} must be an integer from 0 to {maximum}")
    return value


def read_bytes(data: Mapping[str, Any], key: str, *, size: int | None = None) -> bytes:
    """A required base64 member of a JSON object, optionally of an exact decoded length."""
    return b64decode(data.get(key), size=size, field=key)


def read_mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A required JSON object member."""
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be an object")
    return value


def read_list(data: Mapping[str, Any], key: str) -> list[Any]:
    """A required JSON array member."""
    value = data.get(key)
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list")
    return value


def read_time(data: Mapping[str, Any], key: str) -> float:
    """A required finite number of seconds in JSON-shaped state (booleans are not numbers)."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number of seconds")
    return float(value)


def read_optional_time(data: Mapping[str, Any], key: str) -> float | None:
    """Like `read_time`, but an explicit null is allowed (the member itself is still required)."""
    if key not in data:
        raise ValueError(f"{key} is required")
    return None if data[key] is None else read_time(data, key)
