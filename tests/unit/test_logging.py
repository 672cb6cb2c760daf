import io
import json

import pytest

from veil.core.logging import REDACTED, configure_logging, get_logger, redact

CANARY = "canary-7f3a9c"


@pytest.mark.parametrize(
    "field",
    [
        "password",
        "new_password",
        "refresh_token",
        "Authorization",
        "ciphertext",
        "auth_tag",
        "nonce",
        "s3_secret_key",
        "signature",
        "code",
        "ticket",
        "private_key",
    ],
)
def test_secret_named_fields_are_redacted_at_any_depth(field: str) -> None:
    event = {"outer": [{"inner": {field: CANARY}}], field: CANARY}
    assert CANARY not in json.dumps(redact(event))


def test_bearer_tokens_and_jwts_inside_free_text_are_redacted() -> None:
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
    text = f"headers were Authorization: Bearer {CANARY} and token {jwt}"
    cleaned = redact(text)
    assert CANARY not in cleaned
    assert jwt not in cleaned
    assert REDACTED in cleaned


def test_innocent_fields_are_kept() -> None:
    event = {"route": "/v1/x", "status": 404, "user_id": "u1"}
    assert redact(event) == event


def test_log_lines_are_single_json_objects_without_secrets() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    get_logger("test").info("login_failed", email="a@b.c", password=CANARY, note="line1\nforged line")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, "CR/LF in a value must stay escaped inside one line"
    record = json.loads(lines[0])
    assert record["event"] == "login_failed"
    assert record["password"] == REDACTED
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")
    assert CANARY not in lines[0]
