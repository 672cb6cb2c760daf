import ast
import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from veil.core.logging import (
    LOGGED_FIELDS,
    REDACTED,
    configure_logging,
    get_logger,
    note_handshake_refused,
    redact,
)

SOURCE = Path(__file__).resolve().parents[2] / "src" / "veil"

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
        "access_token",
        "master_key",
        "token",
        "key",
        "email",
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


def test_listed_fields_are_kept_even_when_their_names_sound_secret() -> None:
    event = {
        "route": "/v1/x",
        "status": 404,
        "user_id": "u1",
        "ws_passes_dropped": 3,
        "device_tokens_expired": 1,
    }
    assert redact(event) == event


def test_a_field_missing_from_the_allow_list_is_redacted_but_visible() -> None:
    assert redact({"user_id": "u1", "note": CANARY}) == {"user_id": "u1", "note": REDACTED}


def _log_call_fields() -> dict[str, str]:
    """Every keyword passed to `log.<level>(...)` in the server code, with where it is."""
    found: dict[str, str] = {}
    for path in SOURCE.rglob("*.py"):
        if "client" in path.relative_to(SOURCE).parts:
            continue  # the client does not log through veil.core.logging
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"debug", "info", "warning", "error", "exception", "critical"}
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
            ):
                for keyword in node.keywords:
                    if keyword.arg is not None:
                        found.setdefault(keyword.arg, f"{path.relative_to(SOURCE)}:{node.lineno}")
    return found


def test_every_field_the_server_logs_is_on_the_allow_list() -> None:
    """A new log field is redacted until it is listed: list it (after checking it can never hold a
    secret) or log something else."""
    fields = _log_call_fields()
    assert {"user_id", "kind", "reason"} <= fields.keys(), "the scan found no log calls"
    missing = {name: where for name, where in fields.items() if name not in LOGGED_FIELDS}
    assert missing == {}


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


def test_console_format_is_one_readable_line_per_event_without_secrets() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream, log_format="console")
    get_logger("test").info("login_failed", user_id="u1", password=CANARY, reason="line1\nforged line")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "login_failed" in lines[0] and "user_id=u1" in lines[0]
    assert not lines[0].startswith("{")
    assert CANARY not in lines[0]


def test_a_websocket_handshake_refused_on_purpose_is_logged_at_info() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    uvicorn = logging.getLogger("uvicorn.error")
    structlog.contextvars.clear_contextvars()
    uvicorn.error("ASGI callable returned without completing handshake.")  # a real bug: stays an error
    note_handshake_refused(401)
    uvicorn.error("ASGI callable returned without completing handshake.")
    structlog.contextvars.clear_contextvars()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "error"
    assert second["level"] == "info"
    assert second["event"] == "ws_handshake_refused"
    assert second["status"] == 401
