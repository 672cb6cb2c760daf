"""Crockford's base32 (https://www.crockford.com/base32.html) for codes people read and type.

The alphabet has no I, L, O or U, so that what a person reads aloud or copies decodes the same; on
input O reads as 0 and I, L as 1, in either case. Bytes are read as one big-endian number, padded
with zero bits to whole symbols; a decoder refuses padding bits that are not zero (a typo there
would otherwise pass unseen).
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {char: value for value, char in enumerate(ALPHABET)} | {"O": 0, "I": 1, "L": 1}


def symbols_for(size: int) -> int:
    """How many symbols encode `size` bytes."""
    return -(-size * 8 // 5)


def encode(raw: bytes) -> str:
    bits = len(raw) * 8
    length = symbols_for(len(raw))
    number = int.from_bytes(raw, "big") << (length * 5 - bits)
    return "".join(ALPHABET[(number >> (5 * (length - 1 - i))) & 31] for i in range(length))


def decode(text: str, size: int) -> bytes:
    """`size` bytes from exactly `symbols_for(size)` upper-case symbols; ValueError (whose text a
    person can act on) for a wrong length, a character outside the alphabet or nonzero padding."""
    length = symbols_for(size)
    if len(text) != length:
        raise ValueError(f"it has {length} letters and digits, this one has {len(text)}")
    number = 0
    for char in text:
        value = _VALUE.get(char)
        if value is None:
            raise ValueError(f"{char!r} does not occur in it: check for a typo")
        number = (number << 5) | value
    padding = length * 5 - size * 8
    if number & ((1 << padding) - 1):
        raise ValueError("its last character is impossible: check for a typo")
    return (number >> padding).to_bytes(size, "big")
