"""What the client library hands its callers: API errors, users' devices, conversations and
messages, as plain frozen values (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from veil.client.protocol.attachments import FileReference
from veil.client.protocol.codec import b64decode, b64encode, canonical_uuid
from veil.client.protocol.keys import device_fingerprint


class VeilError(Exception):
    """A response the API answered with an error: the problem document, readable as text.

    `status`, `title` and `detail` come from the RFC 9457 document (or from the HTTP status line
    when the body is not one, e.g. from a proxy); `problem` is the whole document, so fields such
    as `current_epoch` or validation `errors` stay available.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(status, title, detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        self.retry_after = retry_after

    @property
    def current_epoch(self) -> int | None:
        """The conversation's epoch when a send was refused for using an old one (409)."""
        value = self.problem.get("current_epoch")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def __str__(self) -> str:
        text = f"HTTP {self.status} {self.title}: {self.detail}"
        errors = self.problem.get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for error in errors:
                if isinstance(error, Mapping):
                    loc = ".".join(str(part) for part in error.get("loc") or [])
                    parts.append(f"{loc}: {error.get('msg')}" if loc else str(error.get("msg")))
            text += " (" + "; ".join(parts) + ")"
        if self.current_epoch is not None:
            text += f" (current_epoch {self.current_epoch})"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after} s)"
        return text

    @classmethod
    def from_response(cls, response: httpx.Response) -> VeilError:
        """Build from any error response, problem document or not (never echoing a large body)."""
        retry_after = response.headers.get("Retry-After")
        retry = int(retry_after) if retry_after and retry_after.isdigit() else None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            title = body.get("title")
            detail = body.get("detail")
            return cls(
                response.status_code,
                title if isinstance(title, str) else response.reason_phrase,
                detail if isinstance(detail, str) else "",
                body,
                retry,
            )
        return cls(response.status_code, response.reason_phrase, response.text[:200].strip(), None, retry)


class TrustError(Exception):
    """Something this device will not do because it would trust the server's word for a key or a
    member: the text says what happened and what the user can do."""


class DeviceNotApprovedError(TrustError):
    """This device waits for approval by another device of the user, so it holds no trusted view of
    its own account and sends nothing to groups."""


class IdentityChangedError(TrustError):
    """A verified contact's master key changed: nothing goes to them until the user verifies again
    or accepts the new key."""


class NotAllowedError(Exception):
    """A membership change the group's verified record does not allow this user (their role, or
    the subject's state): refused before asking the server, whose answer would be the same."""


class NotSignedInError(RuntimeError):
    """The operation needs a signed-in device (call `login`, or load a keystore that has one)."""


@dataclass(frozen=True)
class Device:
    """A device of some user as the key directory lists it (public keys only)."""

    device_id: str
    identity_key: bytes
    signing_key: bytes

    @property
    def fingerprint(self) -> str:
        """What users compare out of band: the only defence against a server that swaps keys."""
        return device_fingerprint(self.identity_key, self.signing_key)


@dataclass(frozen=True)
class Member:
    user_id: str
    role: str
    state: str


@dataclass(frozen=True)
class Conversation:
    """A conversation as the server reports it; `epoch` is what group messages must be sent under.

    `name` and `description` are a group's, decrypted from `encrypted_meta` once this device holds
    the group's meta key (None until then, and for direct conversations); `invited_by` is who
    invited this user, by the verified membership record, while the invitation is open.
    """

    conversation_id: str
    type: str
    epoch: int
    last_seq: int
    created_at: str
    members: tuple[Member, ...]
    encrypted_meta: bytes | None = None
    name: str | None = None
    description: str | None = None
    invited_by: str | None = None

    @property
    def joined_user_ids(self) -> list[str]:
        """The users who receive this epoch's sender keys (invitees do not, until they join)."""
        return [m.user_id for m in self.members if m.state == "joined"]

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Conversation:
        meta = body.get("encrypted_meta")
        return cls(
            conversation_id=canonical_uuid(str(body["conversation_id"])),
            type=str(body["type"]),
            epoch=int(body["epoch"]),
            last_seq=int(body["last_seq"]),
            created_at=str(body["created_at"]),
            members=tuple(
                Member(canonical_uuid(str(m["user_id"])), str(m["role"]), str(m["state"]))
                for m in body["members"]
            ),
            encrypted_meta=None if meta is None else b64decode(meta, field="encrypted_meta"),
        )


@dataclass(frozen=True)
class DeviceMessage:
    """One device-to-device message after decryption (`plaintext` None and `error` set if it failed).

    `content_type` says what it was: `session_init` (a peer set up a session; plaintext is whatever
    it carried, often empty), `session_message` (an application payload) or `sender_key` (a group
    sender key, installed once its sender's membership is checked; plaintext is the raw distribution).
    """

    id: int
    sender_id: str
    sender_device_id: str
    content_type: str
    created_at: str
    plaintext: bytes | None
    error: str | None = None

    def to_state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sender_id": self.sender_id,
            "sender_device_id": self.sender_device_id,
            "content_type": self.content_type,
            "created_at": self.created_at,
            "plaintext": None if self.plaintext is None else b64encode(self.plaintext),
            "error": self.error,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DeviceMessage:
        plaintext = state.get("plaintext")
        return cls(
            id=int(state["id"]),
            sender_id=str(state["sender_id"]),
            sender_device_id=str(state["sender_device_id"]),
            content_type=str(state["content_type"]),
            created_at=str(state["created_at"]),
            plaintext=None if plaintext is None else b64decode(plaintext, field="plaintext"),
            error=None if state.get("error") is None else str(state["error"]),
        )


@dataclass(frozen=True)
class GroupMessage:
    """A conversation message with its plaintext, or, if unreadable, `plaintext` None, `failure`
    the reason code and `error` its sentence (sdk/failure_messages.py words both)."""

    message_id: str
    conversation_id: str
    seq: int
    sender_id: str
    sender_device_id: str
    content_type: str
    key_epoch: int
    parent_id: str | None
    created_at: str
    plaintext: bytes | None
    error: str | None = None
    failure: str | None = None

    @property
    def text(self) -> str | None:
        """The plaintext as text, for `text` messages that were readable."""
        if self.plaintext is None or self.content_type != "text":
            return None
        return self.plaintext.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Block:
    """A user this user blocked, and since when."""

    user_id: str
    created_at: str


@dataclass(frozen=True)
class SentMessage:
    message_id: str
    seq: int
    created_at: str
    key_epoch: int


@dataclass(frozen=True)
class SentFile:
    message: SentMessage
    reference: FileReference
