"""Wire models of the Messaging API: the envelope and nothing that could carry plaintext."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import Field, RootModel

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


class CreateDirect(RequestModel):
    type: Literal["direct"]
    member_id: uuid.UUID


class CreateGroup(RequestModel):
    type: Literal["group"]
    encrypted_meta: NewEncryptedMeta | None = None


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


class Invite(RequestModel):
    user_id: uuid.UUID


class RoleChange(RequestModel):
    role: Literal["admin", "member"]


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
