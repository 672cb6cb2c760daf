"""Binary fields on the wire: strict standard base64 with padding, exact or bounded lengths, and
the rule that refuses plaintext where ciphertext belongs.

`Annotated[bytes, Base64Bytes(32)]` is a pydantic field type that accepts only a JSON string of
canonical base64 decoding to exactly 32 bytes, and serialises bytes back to base64. Its JSON schema
carries the exact pattern, so clients and fuzzers generate only well-formed values.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

_ALPHABET = "[A-Za-z0-9+/]"
# Canonical padding: the last character before the padding carries no stray bits.
_ONE_BYTE_TAIL = f"{_ALPHABET}[AQgw]=="
_TWO_BYTE_TAIL = f"{_ALPHABET}{{2}}[AEIMQUYcgkosw048]="


def _pattern(min_bytes: int, max_bytes: int) -> str:
    if min_bytes == max_bytes:
        full, rest = divmod(min_bytes, 3)
        tail = {0: "", 1: _ONE_BYTE_TAIL, 2: _TWO_BYTE_TAIL}[rest]
        return f"^(?:{_ALPHABET}{{4}}){{{full}}}{tail}$"
    return f"^(?:{_ALPHABET}{{4}})*(?:{_ONE_BYTE_TAIL}|{_TWO_BYTE_TAIL})?$"


def decode_base64(value: object, min_bytes: int, max_bytes: int) -> bytes:
    if isinstance(value, bytes):  # built in Python (a response); JSON input is always a string
        if not min_bytes <= len(value) <= max_bytes:
            raise PydanticCustomError("bytes_size", "Wrong number of bytes.")
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("base64_type", "Must be a base64 string.")
    if len(value) > (max_bytes + 2) // 3 * 4:
        raise PydanticCustomError("base64_size", f"Must decode to at most {max_bytes} bytes.")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("base64", "Must be standard base64 with padding.") from None
    if base64.b64encode(raw).decode() != value:
        raise PydanticCustomError("base64", "Must be canonical base64 with padding.")
    if not min_bytes <= len(raw) <= max_bytes:
        expected = f"{min_bytes}" if min_bytes == max_bytes else f"{min_bytes} to {max_bytes}"
        raise PydanticCustomError("bytes_size", f"Must decode to {expected} bytes.")
    return raw


@dataclass(frozen=True)
class Base64Bytes:
    """Field metadata: `Annotated[bytes, Base64Bytes(32)]` is exactly 32 bytes, `Base64Bytes(1, 64)`
    one to 64. Accepts only a JSON string of canonical base64; serialises back to base64."""

    min_bytes: int
    max_bytes: int | None = None
    # When set, only these exact sizes (e.g. a 12- or 24-byte nonce) between min and max.
    only: tuple[int, ...] = ()

    @property
    def upper(self) -> int:
        return self.min_bytes if self.max_bytes is None else self.max_bytes

    def _validate(self, value: object) -> bytes:
        raw = decode_base64(value, self.min_bytes, self.upper)
        if self.only and len(raw) not in self.only:
            sizes = " or ".join(str(size) for size in self.only)
            raise PydanticCustomError("bytes_size", f"Must decode to {sizes} bytes.")
        return raw

    def _json_pattern(self) -> str:
        if not self.only:
            return _pattern(self.min_bytes, self.upper)
        return "|".join(_pattern(size, size) for size in self.only)

    def __get_pydantic_core_schema__(self, _source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda raw: base64.b64encode(raw).decode(), return_schema=core_schema.str_schema()
            ),
        )

    def __get_pydantic_json_schema__(
        self, _schema: CoreSchema, _handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "contentEncoding": "base64",
            "pattern": self._json_pattern(),
            "minLength": (self.min_bytes + 2) // 3 * 4,
            "maxLength": (self.upper + 2) // 3 * 4,
        }


# Below this many bytes a random string is too likely to look like text to tell them apart.
_MIN_TEXT_CHECK = 24
_TEXT_RATIO = 0.95
_PRINTABLE_ASCII = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def looks_like_text(data: bytes) -> bool:
    """True when `data` is evidently plaintext rather than AEAD output.

    Ciphertext is indistinguishable from uniform random bytes, of which only 98/256 are printable
    ASCII; 95 % printable over 24 bytes or more happens for random data with probability below
    4e-8 (at 24 bytes; 1e-10 at 32, 4e-20 at 64), see docs/adr/0009. Non-ASCII text is caught through UTF-8:
    random bytes almost never decode as long valid UTF-8.
    """
    if len(data) < _MIN_TEXT_CHECK:
        return False
    printable = sum(1 for byte in data if byte in _PRINTABLE_ASCII)
    if printable >= _TEXT_RATIO * len(data):
        return True
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    readable = sum(1 for char in text if char.isprintable() or char in "\t\r\n")
    return readable >= _TEXT_RATIO * len(text)
