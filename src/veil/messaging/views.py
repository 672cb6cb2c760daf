"""Wire views of stored conversations and messages, shared by the HTTP API and the WebSocket."""

from __future__ import annotations

from veil.messaging.schemas import ConversationView, MembershipEventView, MemberView, MessageView
from veil.messaging.service import ConversationDetail
from veil.messaging.store import EventRecord, MessageRecord


def conversation_view(detail: ConversationDetail) -> ConversationView:
    c = detail.conversation
    return ConversationView(
        conversation_id=c.id,
        type=c.type,
        epoch=c.epoch,
        last_seq=c.last_seq,
        created_at=c.created_at,
        encrypted_meta=c.encrypted_meta,
        members=[MemberView(user_id=m.user_id, role=m.role, state=m.state) for m in detail.members],
    )


def message_view(m: MessageRecord) -> MessageView:
    return MessageView(
        message_id=m.message_id,
        conversation_id=m.conversation_id,
        sender_id=m.sender_id,
        sender_device_id=m.sender_device_id,
        seq=m.seq,
        created_at=m.created_at,
        ciphertext=m.ciphertext,
        nonce=m.nonce,
        auth_tag=m.auth_tag,
        content_type=m.content_type,
        parent_id=m.parent_id,
        key_epoch=m.key_epoch,
    )


def event_view(e: EventRecord) -> MembershipEventView:
    return MembershipEventView(
        event_id=e.id,
        epoch=e.epoch,
        kind=e.kind,
        actor_id=e.actor_id,
        actor_device_id=e.actor_device_id,
        subject_id=e.subject_id,
        commit=e.commit,
        created_at=e.created_at,
    )
