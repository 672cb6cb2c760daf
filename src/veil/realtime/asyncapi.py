"""The AsyncAPI 3.0 document of the WebSocket protocol (`GET /v1/asyncapi.json`), generated from
the frame models the server sends and parses (`veil.realtime.frames`)."""

from __future__ import annotations

import functools
from typing import Any, get_args

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from veil.realtime.frames import CLIENT_FRAMES, SERVER_FRAMES

_SCHEMA_REF = "#/components/schemas/{model}"
_CHANNEL = "socket"

CONNECT = """\
`GET /v1/ws`, upgraded to a WebSocket: frames are JSON text, one object per frame, named by its
`type`. Authenticate with `Authorization: Bearer <access token>` (native clients) or with
`?ticket=` from `POST /v1/ws/tickets` (browsers; single use, 30 seconds). A handshake is refused
with an HTTP problem document: 401 (no valid credentials), 403 (an `Origin` not allowed), 422 (a
malformed `batch`), 429 (too many connects; see `Retry-After`), 503 (a backing service is
unavailable).

On connect the server replays, per conversation, every message after the device's acknowledged
`seq`, then the device's queued device messages, then sends live. Delivery is at least once: a
message is sent again on the next connection until it is acknowledged. With `?batch=true` the
messages come in `messages` frames, as many as are ready when the server writes (at most 100 and
256 KiB per frame), instead of a `message` frame each: fewer frames, and fewer acks, for a busy
device.

Close codes: 1001 the server is shutting down; 1003 a binary frame; 1009 a frame over 128 KiB;
4401 the session ended or the access token that opened the socket expired (reconnect with a fresh
one); 4408 the client did not read its frames fast enough; 4409 the same device connected again."""


def _message(model: type[BaseModel], ref: dict[str, str]) -> dict[str, Any]:
    name = frame_type(model)
    return {
        "name": name,
        "title": name,
        "summary": (model.__doc__ or "").strip().split("\n\n", 1)[0].replace("\n", " "),
        "contentType": "application/json",
        "payload": ref,
    }


def frame_type(model: type[BaseModel]) -> str:
    """The frame's `type`: the one value its `type` field admits."""
    (name,) = get_args(model.model_fields["type"].annotation)
    return str(name)


def build_asyncapi() -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((model, "serialization") for model in SERVER_FRAMES),
        *((model, "validation") for model in CLIENT_FRAMES),
    ]
    refs, schema_doc = models_json_schema(wanted, ref_template=_SCHEMA_REF)
    messages = {frame_type(model): _message(model, refs[(model, mode)]) for model, mode in wanted}
    channel_messages = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/channels/{_CHANNEL}/messages/{name}"}

    operations: dict[str, Any] = {}
    for name in map(frame_type, SERVER_FRAMES):
        operations[f"send_{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{_CHANNEL}"},
            "summary": messages[name]["summary"],
            "messages": [ref(name)],
        }
    for name in map(frame_type, CLIENT_FRAMES):
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{_CHANNEL}"},
            "summary": messages[name]["summary"],
            "messages": [ref(name)],
        }
        # A refused frame is answered with an error frame; a send is answered either way.
        replies = ["sent", "error"] if name == "send" else ["error"]
        operation["reply"] = {
            "channel": {"$ref": f"#/channels/{_CHANNEL}"},
            "messages": [ref(reply) for reply in replies],
        }
        operations[f"receive_{name}"] = operation

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Veil realtime",
            "version": "1",
            "description": "The WebSocket protocol of Veil's API: live delivery of end-to-end "
            "encrypted messages, acknowledgements, sends and events. The HTTP API is "
            "described by `/v1/openapi.json`.",
        },
        "servers": {
            "veil": {
                "host": "{host}",
                "protocol": "wss",
                "description": "The Veil gateway.",
                "variables": {"host": {"default": "localhost:8443"}},
            }
        },
        "defaultContentType": "application/json",
        "channels": {
            _CHANNEL: {
                "address": "/v1/ws",
                "title": "The device's socket",
                "description": CONNECT,
                "messages": channel_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "ticket": {
                                    "type": "string",
                                    "description": "A ticket from `POST /v1/ws/tickets`.",
                                },
                                "batch": {
                                    "type": "string",
                                    "enum": ["true", "false"],
                                    "default": "false",
                                    "description": "`true`: messages in `messages` frames.",
                                },
                            },
                        },
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Authorization": {"type": "string", "description": "`Bearer <access token>`."}
                            },
                        },
                        "bindingVersion": "0.1.0",
                    }
                },
            }
        },
        "operations": operations,
        "components": {"messages": messages, "schemas": schema_doc.get("$defs", {})},
    }


@functools.cache
def encoded_asyncapi() -> bytes:
    """Built once per process, on first request."""
    return orjson.dumps(build_asyncapi())
