"""The decrypted history of every conversation, as one JSON document: the client half of a data
export (GDPR Art. 20). The server's export has the account's metadata but no message text, which
only the user's devices can read; this document is that text, as this device can read it.

The shape is stable (`format` names its version). `veil-client export` adds it to the server's
copy as `client_history`; `veil-client export --history-only` writes it alone:

    {"format": "veil-history/1", "exported_at", "user_id", "email",
     "conversations": [
        {"conversation_id", "type", "name", "local_name", "created_at",
         "members": [{"user_id", "name", "role", "state"}],
         "error": null or why this conversation could not be read,
         "messages": [{"seq", "message_id", "sender_id", "sender_name", "from_me", "sender_device_id",
                       "created_at", "content_type", "parent_id", "text", "file": {"name", "size"} or null,
                       "failure", "error"}]}]}

`name` is the group's own (end-to-end-encrypted) name or, for a direct conversation, the other
person's address-book name; `sender_name` and members' `name` come from the address book (null when
someone is not in it). A message this device cannot read has `text` null, `failure` a stable reason
code and `error` the sentence `history` shows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veil.client.cli.chat import unread_sentence
from veil.client.cli.context import Context
from veil.client.cli.failures import explain
from veil.client.cli.output import write_private
from veil.client.cli.profile import Profile
from veil.client.protocol.attachments import FileReference
from veil.client.protocol.errors import CryptoError
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import Conversation, GroupMessage, TrustError, VeilError

FORMAT = "veil-history/1"


def readable_conversations(client: VeilClient) -> list[Conversation]:
    """The conversations this user has joined (an invitation has no history to read yet)."""
    return [
        c
        for c in client.conversations()
        if any(m.user_id == client.user_id and m.state == "joined" for m in c.members)
    ]


def history_document(ctx: Context, client: VeilClient) -> dict[str, Any]:
    """Every joined conversation with each message as this device reads it (see the module)."""
    conversations = []
    for conversation in readable_conversations(client):
        entry = _conversation(ctx.profile, client, conversation)
        try:
            messages = client.history(conversation.conversation_id)
        except (TrustError, VeilError, CryptoError) as error:
            entry["error"] = explain(error, url=ctx.url)
            messages = []
        entry["messages"] = [_message(ctx.profile, client, message) for message in messages]
        conversations.append(entry)
    return {
        "format": FORMAT,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "user_id": client.user_id,
        "email": ctx.profile.email,
        "conversations": conversations,
    }


def _known_name(profile: Profile, user_id: str) -> str | None:
    return next((name for name, known in profile.contacts.items() if known == user_id), None)


def _conversation(profile: Profile, client: VeilClient, conversation: Conversation) -> dict[str, Any]:
    others = [m.user_id for m in conversation.members if m.user_id != client.user_id]
    if conversation.type == "group":
        name = conversation.name
    else:
        name = next((n for u in others if (n := _known_name(profile, u)) is not None), None)
    return {
        "conversation_id": conversation.conversation_id,
        "type": conversation.type,
        "name": name,
        "local_name": profile.group_name_of(conversation.conversation_id),
        "created_at": conversation.created_at,
        "members": [
            {"user_id": m.user_id, "name": _known_name(profile, m.user_id), "role": m.role, "state": m.state}
            for m in conversation.members
        ],
        "error": None,
    }


def _message(profile: Profile, client: VeilClient, message: GroupMessage) -> dict[str, Any]:
    readable = message.plaintext is not None
    document: dict[str, Any] = {
        "seq": message.seq,
        "message_id": message.message_id,
        "sender_id": message.sender_id,
        "sender_name": _known_name(profile, message.sender_id),
        "from_me": message.sender_id == client.user_id,
        "sender_device_id": message.sender_device_id,
        "created_at": message.created_at,
        "content_type": message.content_type,
        "parent_id": message.parent_id,
        "text": message.text,
        "file": None,
        "failure": message.failure,
        "error": None if readable else unread_sentence(message, profile),
    }
    if message.content_type == "file" and message.plaintext is not None:
        try:
            reference = FileReference.decode(message.plaintext)
        except CryptoError:
            pass
        else:
            document["file"] = {"name": reference.name, "size": reference.plaintext_size}
    return document


def export_history(ctx: Context, output: Path) -> None:
    """`veil-client export --history-only`: this document alone, without the server's copy (no
    emailed code, nothing asked of the server but the messages)."""
    document = history_document(ctx, ctx.signed_in_client())
    write_private(output, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    conversations = len(document["conversations"])
    messages = sum(len(c["messages"]) for c in document["conversations"])
    print(
        f"Wrote your decrypted history to {output} ({conversations} conversation"
        f"{'' if conversations == 1 else 's'}, {messages} message{'' if messages == 1 else 's'})."
    )
