import base64
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from veil.core.binary import _pattern, decode_base64, looks_like_text


@pytest.mark.parametrize("size", [12, 16, 24, 32, 64])
def test_canonical_base64_of_the_right_size_decodes(size: int) -> None:
    raw = os.urandom(size)
    encoded = base64.b64encode(raw).decode()
    assert decode_base64(encoded, size, size) == raw
    assert re.fullmatch(_pattern(size, size), encoded)


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(bytes(31)).decode(),  # too short
        base64.b64encode(bytes(64)).decode(),  # a seed-sized blob
        base64.b64encode(bytes(32)).decode().rstrip("="),  # no padding
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # wrong alphabet
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEI...\n-----END PRIVATE KEY-----",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=",  # non-canonical padding bits
        12345,
    ],
)
def test_anything_else_is_refused(value: object) -> None:
    with pytest.raises(PydanticCustomError):
        decode_base64(value, 32, 32)


@given(st.binary(min_size=1, max_size=4096))
def test_the_variable_length_pattern_matches_exactly_canonical_base64(raw: bytes) -> None:
    assert re.fullmatch(_pattern(1, 4096), base64.b64encode(raw).decode())


@pytest.mark.parametrize(
    "text",
    [
        "Meet me at the station at nine, bring the documents.",
        "Привет! Встречаемся у вокзала в девять, возьми документы.",
        "会议改到明天下午三点，请带上所有的文件和你的电脑。谢谢大家",
        '{"text": "hello there, this is a json body with plaintext"}',
    ],
)
def test_plaintext_is_recognised(text: str) -> None:
    assert looks_like_text(text.encode())


def test_random_bytes_of_every_length_pass() -> None:
    # 20,000 samples across lengths: AEAD output must essentially never be refused (ADR 0009).
    for length in range(1, 2001):
        for _ in range(10):
            assert not looks_like_text(os.urandom(length))
