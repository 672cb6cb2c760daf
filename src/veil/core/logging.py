"""Structured JSON logs with redaction.

Every line is one JSON object with a UTC timestamp, level, event and the request id bound for the
current request. Secrets never reach a line: any field whose name says it holds a password, token,
key, signature, code or ciphertext is replaced before rendering, at any nesting depth, and the
standard-library loggers (uvicorn, asyncpg) go through the same processors. JSON escaping keeps
CR/LF from user input inside one line, so log injection cannot forge a second line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

# Field names that may carry secret or content material. Matched as substrings, case-insensitive,
# so `refresh_token`, `X-Api-Key`, `s3_secret_key` and `new_password` are all covered.
_SENSITIVE_NAME = re.compile(
    r"pass(word)?|token|secret|authorization|cookie|key|signature|ciphertext|nonce|auth_tag"
    r"|code|ticket|credential|private",
    re.IGNORECASE,
)
# Values that look like bearer credentials even when the field name is innocent.
_BEARER_VALUE = re.compile(r"(?i)\bbearer\s+\S+")
_JWT_VALUE = re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*")
# Credentials in URLs that servers log (uvicorn logs a WebSocket's path with its query string).
_QUERY_SECRET = re.compile(
    r"(?i)\b(ticket|token|access_token|refresh_token|code|signature|x-amz-signature)=[^&\s\"']+"
)


def redact(value: Any, depth: int = 0) -> Any:
    """Return `value` with secret-named fields and bearer-looking strings masked."""
    if depth > 8:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _SENSITIVE_NAME.search(k) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str):
        value = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", value)
        return _JWT_VALUE.sub(REDACTED, _BEARER_VALUE.sub("Bearer " + REDACTED, value))
    return value


def _redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return redact(event_dict)  # type: ignore[no-any-return]


def _render_json(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    return orjson.dumps(event_dict, default=str).decode()


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn adds a duplicate of the message with ANSI colours; it is noise in JSON.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library through one JSON, redacting pipeline.

    Called once by each entry point before anything logs.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
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
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _render_json],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
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
