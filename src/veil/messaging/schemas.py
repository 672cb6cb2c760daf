"""Wire models of the Messaging API: the envelope and nothing that could carry plaintext."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, RootModel, ValidationInfo, WithJsonSchema, field_validator

from veil.core.binary import Base64Bytes
from veil.core.wire import RequestModel, ResponseModel, Timestamp
from veil.keys.schemas import AuthTag, Ciphertext, Nonce

# What the plaintext is; never the plaintext itself.
ContentType = Literal["text", "file", "reaction", "system"]
EncryptedMeta = Annotated[bytes, Base64Bytes(1, 4096)]
# What a new group's meta must be: at least the smallest AEAD output (a 12-byte nonce and a
# 16-byte tag around an empty plaintext), so every accepted value is long enough for the
# plaintext rule of ADR 0009 to judge it (a short plaintext name would otherwise pass unjudged).
NewEncryptedMeta = Annotated[bytes, Base64Bytes(28, 4096)]
MAX_COMMIT_BYTES = 16 * 1024


def _exact_base64_schema(max_bytes: int) -> dict[str, Any]:
    """The JSON schema of canonical base64 of 1 to `max_bytes` bytes, exact to the byte: a length
    bound alone also admits strings of that length that decode to up to two bytes more, which
    fuzzers rightly report when the server refuses them."""
    quads = max_bytes // 3
    quad, one, two = "[A-Za-z0-9+/]{4}", "[A-Za-z0-9+/][AQgw]==", "[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]="
    # Whole groups, then at most a tail that keeps the total within `max_bytes`.
    forms = [f"(?:{quad}){{0,{quads}}}"]
    for tail, size in ((one, 1), (two, 2)):
        groups = (max_bytes - size) // 3
        if groups >= 0:
            forms.append(f"(?:{quad}){{0,{groups}}}{tail}")
    return {
        "type": "string",
        "contentEncoding": "base64",
        "pattern": f"^(?:{'|'.join(forms)})$",
        "minLength": 4,
        "maxLength": (max_bytes + 2) // 3 * 4,
    }


# A membership change's signed statement (issue 14), opaque to the server: base64 of 1 byte to
# 16 KiB. The bound is the contract's, not configuration, so a larger one is a schema error (422)
# like every other fixed-size binary field; 413 is for the request body and configured limits.
# No plaintext rule: it is a signed statement about the roster, not message content.
Commit = Annotated[
    bytes,
    Base64Bytes(1, MAX_COMMIT_BYTES),
    WithJsonSchema(_exact_base64_schema(MAX_COMMIT_BYTES)),
]


class CreateDirect(RequestModel):
    type: Literal["direct"]
    member_id: uuid.UUID


class CreateGroup(RequestModel):
    type: Literal["group"]
    encrypted_meta: NewEncryptedMeta | None = None
    commit: Commit | None = None


class CreateConversation(RootModel[Annotated[CreateDirect | CreateGroup, Field(discriminator="type")]]):
    pass


class MemberView(ResponseModel):
    user_id: uuid.UUID
    role: Literal["owner", "admin", "member"]
    state: Literal["invited", "joined"]


class ConversationView(ResponseModel):
    conversation_id: uuid.UUID
    type: Literal["direct", "group"]
    epoch: int
    last_seq: int
    created_at: Timestamp
    encrypted_meta: EncryptedMeta | None = None
    members: list[MemberView]


class ConversationList(ResponseModel):
    items: list[ConversationView]
    next_cursor: str | None


# An event id as `GET /v1/conversations/{id}/events` returns it (0: built on no event at all).
EventId = Annotated[int, Field(ge=0, le=2**63 - 1)]


class CommittedChange(RequestModel):
    """A membership change's signed `commit` and the event it was built on (ADR 0017).

    `after_event_id` names the latest event the client saw when it built the commit; the server
    records the change only if that is still the conversation's latest event, so two commits on
    one predecessor cannot both land. It means nothing without a commit, so alone it is a 422.
    """

    # The same rule in the published schema, so generated requests respect it too.
    model_config = ConfigDict(
        json_schema_extra={
            "dependentSchemas": {
                "after_event_id": {"required": ["commit"], "properties": {"commit": {"type": "string"}}}
            }
        }
    )

    commit: Commit | None = None
    after_event_id: EventId | None = None

    @field_validator("after_event_id")
    @classmethod
    def _needs_a_commit(cls, value: int | None, info: ValidationInfo) -> int | None:
        # `commit` is validated first; when it is missing from `data` it failed on its own.
        if value is not None and "commit" in info.data and info.data["commit"] is None:
            raise ValueError("after_event_id needs a commit: it names the event the commit was built on.")
        return value


class Invite(CommittedChange):
    user_id: uuid.UUID


class RoleChange(CommittedChange):
    role: Literal["admin", "member"]


class MembershipChange(CommittedChange):
    """The optional body of accept, decline and leave or remove."""


EventKind = Literal["created", "invited", "joined", "declined", "left", "removed", "role_changed"]


class MembershipEventView(ResponseModel):
    event_id: int
    epoch: int
    kind: EventKind
    # Null once the actor's account is erased.
    actor_id: uuid.UUID | None
    # The acting device (its session id); null once the actor's account is erased.
    actor_device_id: uuid.UUID | None
    subject_id: uuid.UUID
    commit: Commit | None
    created_at: Timestamp


class MembershipEventList(ResponseModel):
    items: list[MembershipEventView]
    next_cursor: str | None


class Envelope(RequestModel):
    message_id: uuid.UUID
    ciphertext: Ciphertext
    nonce: Nonce
    auth_tag: AuthTag
    content_type: ContentType
    parent_id: uuid.UUID | None = None
    key_epoch: int = Field(ge=0, le=2**31 - 1)


class SendResult(ResponseModel):
    message_id: uuid.UUID
    seq: int
    created_at: Timestamp


class MessageView(ResponseModel):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    sender_device_id: uuid.UUID
    seq: int
    created_at: Timestamp
    ciphertext: Ciphertext
    nonce: Nonce
    auth_tag: AuthTag
    content_type: str
    parent_id: uuid.UUID | None
    key_epoch: int


class MessageList(ResponseModel):
    items: list[MessageView]
    next_cursor: str | None


class Receipt(RequestModel):
    type: Literal["delivered", "read"]
    up_to_seq: int = Field(ge=1, le=2**63 - 1)
