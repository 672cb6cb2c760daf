"""Structured logs with redaction by an allow-list of field names.

Every line is one JSON object (or, for `make run`, one human-readable line) with a UTC timestamp,
level, event and the request id bound for the current request. A field's value reaches a line only
if its name is in `LOGGED_FIELDS`, at any nesting depth; any other field is kept with its value
replaced, so a new field shows up as `[redacted]` until someone decides it is safe to log. (Matching
names against a list of secret-sounding words hid harmless counters such as `ws_passes_dropped`,
and would let a secret under an innocent new name through.) Logged text is still scanned for bearer
tokens, JWTs and credentials in URLs, which uvicorn and exceptions put in free text. The
standard-library loggers (uvicorn, asyncpg) go through the same processors. JSON escaping keeps
CR/LF from user input inside one line, so log injection cannot forge a second line; the console
format escapes them too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

LogFormat = Literal["json", "console"]

# The only field names whose values are logged. None of them may ever hold a password, token, key,
# signature, code, ticket, nonce or ciphertext. tests/unit/test_logging.py fails when a log call in
# src/veil passes a field that is not listed here.
LOGGED_FIELDS = frozenset(
    {
        # Added by the pipeline itself.
        "event",
        "level",
        "logger",
        "timestamp",
        "exception",
        "request_id",
        # Passed by log calls.
        "applied",
        "attempts",
        "bytes",
        "channel",
        "close_code",
        "closed",
        "count",
        "detail",
        "device_id",
        "duration_ms",
        "error",
        "errors",
        "incident_id",
        "ip",
        "kind",
        "mail_id",
        "method",
        "name",
        "openssl",
        "operator_id",
        "reason",
        "recipient_device_id",
        "role",
        "route",
        "scope",
        "session_id",
        "sessions_ended",
        "sessions_revoked",
        "sockets",
        "status",
        "type",
        "user_id",
        "version",
        "worker",
        # Worker processes (veil.workers) and the cursor writer (veil.realtime.cursors): numbers.
        "acks",
        "deaths",
        "exit_code",
        "lived_seconds",
        "pending",
        "port",
        "workers",
        # The counts of a maintenance round (veil.maintenance, veil.retention).
        "sessions_expired",
        "devices_with_expired_messages",
        "limiter_rows_dropped",
        "ws_passes_dropped",
        "signups_expired",
        "invites_dropped",
        "device_tokens_expired",
        "password_resets_expired",
        "messages_deleted",
        "sessions_deleted",
        "account_requests_deleted",
        "accounts_purged",
        "attachments_removed",
        "backups_removed",
        "export_archives_removed",
    }
)
# structlog's bookkeeping for standard-library records, removed before rendering.
_PIPELINE_META = frozenset({"_record", "_from_structlog"})

# Values that look like bearer credentials whatever field they are in.
_BEARER_VALUE = re.compile(r"(?i)\bbearer\s+\S+")
_JWT_VALUE = re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*")
# Credentials in URLs that servers log (uvicorn logs a WebSocket's path with its query string).
_QUERY_SECRET = re.compile(
    r"(?i)\b(ticket|token|access_token|refresh_token|code|signature|x-amz-signature)=[^&\s\"']+"
)


def redact(value: Any, depth: int = 0) -> Any:
    """Return `value` with every field not in `LOGGED_FIELDS` masked, at any depth, and
    bearer-looking strings masked wherever they are."""
    if depth > 8:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact_field(k, v, depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str):
        value = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", value)
        return _JWT_VALUE.sub(REDACTED, _BEARER_VALUE.sub("Bearer " + REDACTED, value))
    return value


def _redact_field(name: object, value: Any, depth: int) -> Any:
    if name in _PIPELINE_META:
        return value
    if name in LOGGED_FIELDS:
        return redact(value, depth + 1)
    return REDACTED


def _redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return redact(event_dict)  # type: ignore[no-any-return]


def _render_json(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    return orjson.dumps(event_dict, default=str).decode()


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn adds a duplicate of the message with ANSI colours; it is noise in JSON.
    event_dict.pop("color_message", None)
    return event_dict


# uvicorn (0.54, websockets-sansio) reports a handshake the app refused with a denial response
# (401, 403, 429, 503) as this error although the response went out; a client with a stale ticket
# is not a server error. The WebSocket route says so (`note_handshake_refused`) before returning.
_UNFINISHED_HANDSHAKE = "ASGI callable returned without completing handshake."


def note_handshake_refused(status: int) -> None:
    """The current WebSocket handshake was refused on purpose, with `status`."""
    structlog.contextvars.bind_contextvars(refused_status=status)


def _refused_handshake_at_info(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    status = event_dict.pop("refused_status", None)
    if status is not None and event_dict.get("event") == _UNFINISHED_HANDSHAKE:
        event_dict.update(event="ws_handshake_refused", level="info", status=status)
    return event_dict


def _escape_line_breaks(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # The console renderer prints text as it is; a CR/LF from user input would start a new line.
    # Tracebacks keep theirs.
    return {
        k: v.replace("\r", "\\r").replace("\n", "\\n") if isinstance(v, str) and k != "exception" else v
        for k, v in event_dict.items()
    }


def configure_logging(
    level: str = "info", stream: TextIO | None = None, log_format: LogFormat = "json"
) -> None:
    """Route structlog and the standard library through one redacting pipeline, rendered as
    JSON lines (production) or as readable lines for a terminal (`VEIL_LOG_FORMAT=console`).

    Called once by each entry point before anything logs.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
        _refused_handshake_at_info,
        structlog.processors.format_exc_info,
        _redact_event,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    output = stream or sys.stderr
    render: list[Processor] = (
        [_render_json]
        if log_format == "json"
        else [
            _escape_line_breaks,
            structlog.dev.ConsoleRenderer(
                colors=output.isatty(), exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    )
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncpg"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # We write our own access line (with the route template, never the query string).
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)


def bind_request(context: MutableMapping[str, Any]) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**context)
