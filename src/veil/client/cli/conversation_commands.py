"""`veil-client` commands about conversations: conversations, chat, send, history, send-file,
get-file and group create|invite|accept|decline|leave|remove.

A conversation is named the way a person would: a group by the name given at `group create` (or
`group accept --name`) or its id, a direct conversation by the other person's address-book name or
user id (see `Context.conversation_with`). A group's own name, end-to-end encrypted for its members,
is shown beside it once this device holds its key; an invitation before that reads "a group by"
whoever invited. Listings print JSON with `--json`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

from veil.client.cli.account_commands import note
from veil.client.cli.chat import describe, run_chat, unread_sentence
from veil.client.cli.context import Context
from veil.client.cli.failures import UserError
from veil.client.cli.live import LiveFeed
from veil.client.cli.output import emit_json, safe_text
from veil.client.cli.profile import as_uuid
from veil.client.protocol.attachments import FileReference
from veil.client.protocol.errors import CryptoError
from veil.client.sdk.models import Conversation, GroupMessage, NotAllowedError, VeilError


def _title(ctx: Context, conversation: Conversation) -> str:
    if conversation.type == "group":
        return f"group {_group_label(ctx, conversation)}"
    others = [m.user_id for m in conversation.members if m.user_id != ctx.profile.user_id]
    return ", ".join(ctx.profile.name_of(user_id) for user_id in others) or "yourself"


def _group_label(ctx: Context, conversation: Conversation) -> str:
    """The local name, then the group's own name (quoted: its members chose it), then who
    invited, then the id."""
    local = ctx.profile.group_name_of(conversation.conversation_id)
    own = None if conversation.name is None else f'"{safe_text(conversation.name)}"'
    if local and own and own != f'"{local}"':
        return f"{local} ({own})"
    if local or own:
        return local or str(own)
    if conversation.invited_by is not None:
        return f"a group by {ctx.profile.name_of(conversation.invited_by)}"
    return conversation.conversation_id


def _invited(ctx: Context, conversation: Conversation) -> bool:
    return any(m.user_id == ctx.profile.user_id and m.state == "invited" for m in conversation.members)


def _conversation_json(ctx: Context, conversation: Conversation) -> dict[str, object]:
    return {
        "conversation_id": conversation.conversation_id,
        "type": conversation.type,
        "name": conversation.name,
        "description": conversation.description,
        "local_name": ctx.profile.group_name_of(conversation.conversation_id),
        "invited": _invited(ctx, conversation),
        "invited_by": conversation.invited_by,
        "epoch": conversation.epoch,
        "last_seq": conversation.last_seq,
        "created_at": conversation.created_at,
        "members": [
            {"user_id": m.user_id, "name": ctx.profile.name_of(m.user_id), "role": m.role, "state": m.state}
            for m in conversation.members
        ],
    }


def conversations(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    found = client.conversations()
    if args.json:
        emit_json([_conversation_json(ctx, conversation) for conversation in found])
        return
    if not found:
        print("No conversations yet: `veil-client chat NAME` or `veil-client group create NAME` starts one.")
    for conversation in found:
        members = ", ".join(
            ctx.profile.name_of(m.user_id) + (" (invited)" if m.state == "invited" else "")
            for m in conversation.members
        )
        label = _title(ctx, conversation).removeprefix("group ")
        print(
            f"{conversation.type:6} {conversation.conversation_id}  {label}: "
            f"{conversation.last_seq} message{'' if conversation.last_seq == 1 else 's'}, members {members}"
        )
        if conversation.description:
            print(f"       {safe_text(conversation.description)}")
        if _invited(ctx, conversation):
            print(f"       you are invited: `veil-client group accept {conversation.conversation_id}`")


def chat(ctx: Context, args: argparse.Namespace) -> None:
    conversation = ctx.conversation_with(args.target)
    client = ctx.signed_in_client()
    feed = LiveFeed(client, ctx.url, ctx.tls())
    run_chat(
        client,
        ctx.profile,
        conversation,
        feed,
        title=_title(ctx, conversation),
        url=ctx.url,
        recent=args.last,
    )


def send(ctx: Context, args: argparse.Namespace) -> None:
    conversation = ctx.conversation_with(args.target)
    text = " ".join(args.text)
    if not text.strip():
        raise UserError("Nothing to send.")
    sent = ctx.signed_in_client().send_text(conversation.conversation_id, text)
    print(f"#{sent.seq} sent to {_title(ctx, conversation)}.")


def history(ctx: Context, args: argparse.Namespace) -> None:
    conversation = ctx.conversation_with(args.target)
    client = ctx.signed_in_client()
    after = max(0, conversation.last_seq - args.last)
    messages = client.history(conversation.conversation_id, after_seq=after)
    if args.json:
        emit_json([_message_json(ctx, message) for message in messages])
        return
    if not messages:
        print(f"No messages with {_title(ctx, conversation)} yet.")
    for message in messages:
        print(f"#{message.seq} {describe(message, ctx.profile)}")


def _message_json(ctx: Context, message: GroupMessage) -> dict[str, object]:
    document: dict[str, object] = {
        "seq": message.seq,
        "message_id": message.message_id,
        "sender_id": message.sender_id,
        "sender": ctx.profile.name_of(message.sender_id),
        "sender_device_id": message.sender_device_id,
        "created_at": message.created_at,
        "content_type": message.content_type,
        "parent_id": message.parent_id,
        "text": message.text,
        "failure": message.failure,
        "error": None if message.plaintext is not None else unread_sentence(message, ctx.profile),
    }
    if message.content_type == "file" and message.plaintext is not None:
        try:
            reference = FileReference.decode(message.plaintext)
        except CryptoError:
            document["file"] = None
        else:
            document["file"] = {"name": reference.name, "size": reference.plaintext_size}
    return document


def send_file(ctx: Context, args: argparse.Namespace) -> None:
    path = Path(args.path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} is not a file.")
    conversation = ctx.conversation_with(args.target)
    sent = ctx.signed_in_client().send_file(conversation.conversation_id, path)
    print(
        f"#{sent.message.seq} sent {sent.reference.name} ({sent.reference.plaintext_size} bytes, "
        f"encrypted) to {_title(ctx, conversation)}."
    )


def _file_message(ctx: Context, conversation: Conversation, seq: int) -> GroupMessage:
    client = ctx.signed_in_client()
    for message in client.history(conversation.conversation_id, after_seq=seq - 1):
        if message.seq != seq:
            break
        if message.content_type != "file":
            raise UserError(f"Message #{seq} is not a file.")
        if message.plaintext is None:
            raise UserError(f"Message #{seq} cannot be read: {unread_sentence(message, ctx.profile)}.")
        return message
    raise UserError(f"There is no message #{seq} in that conversation.")


def _safe_name(name: str, seq: int) -> str:
    """The sender chose the name: keep its last component, and never a hidden or special one."""
    base = Path(name.replace("\\", "/")).name
    return base if base and not base.startswith(".") else f"veil-file-{seq}"


def get_file(ctx: Context, args: argparse.Namespace) -> None:
    seq = _seq(args.seq)
    conversation = ctx.conversation_with(args.target)
    message = _file_message(ctx, conversation, seq)
    assert message.plaintext is not None
    reference = FileReference.decode(message.plaintext)
    output = Path(args.output).expanduser() if args.output else Path(_safe_name(reference.name, seq))
    if output.exists() and not args.force:
        raise UserError(f"{output} already exists; choose another --output or pass --force.")
    # Decrypt into a temporary file beside the target, so a refused download leaves nothing behind.
    descriptor, temporary = tempfile.mkstemp(dir=output.parent, prefix=".veil-", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as sink:
            ctx.signed_in_client().download_file(message, sink)
        os.replace(temporary, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    print(f"Saved {output} ({reference.plaintext_size} bytes, checked and decrypted).")


def _seq(text: str) -> int:
    digits = text.lstrip("#")
    if not digits.isdigit() or int(digits) < 1:
        raise UserError(f"{text!r} is not a message number (like 7 or #7).")
    return int(digits)


def _invitation_id(ctx: Context, which: str) -> str:
    """The group an open invitation is to, by its id or local name, or by who invited (what
    `conversations` shows before the group's own name can be read)."""
    if which in ctx.profile.groups or as_uuid(which) is not None:
        return ctx.group_id(which)
    inviter = ctx.profile.user_id_of(which)
    found = [
        c.conversation_id
        for c in ctx.signed_in_client().conversations()
        if c.invited_by == inviter and _invited(ctx, c)
    ]
    if len(found) != 1:
        many = f"{len(found)} open invitations" if found else "no open invitation"
        raise UserError(
            f"You have {many} from {which}; name the group by its id (`veil-client conversations`)."
        )
    return found[0]


def group(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    action = args.group_command
    if action == "create":
        if args.name in ctx.profile.groups:
            raise UserError(f"You already have a group named {args.name!r}.")
        try:
            conversation = client.create_group(args.name, description=args.description or "")
        except ValueError as error:
            raise UserError(f"{str(error).capitalize()}.") from None
        ctx.profile.name_group(args.name, conversation.conversation_id)
        print(f"Created group {args.name} ({conversation.conversation_id}).")
        note(
            f"Invite people with `veil-client group invite {args.name} NAME`; members see its name "
            "(end-to-end encrypted) once someone in the group sends a message after they join."
        )
        return
    if action in ("accept", "decline"):
        conversation_id = _invitation_id(ctx, args.group)
    else:
        conversation_id = ctx.group_id(args.group)
    try:
        if action == "invite":
            for who in args.users:
                client.invite(conversation_id, ctx.profile.user_id_of(who))
                print(f"Invited {who}; they join with `veil-client group accept {conversation_id}`.")
        elif action == "accept":
            client.accept(conversation_id)
            if args.name:
                ctx.profile.name_group(args.name, conversation_id)
            print(f"Joined group {args.name or conversation_id}.")
            note("Its name shows in `veil-client conversations` once a member sends a message.")
        elif action == "decline":
            client.decline(conversation_id)
            print("Declined the invitation.")
        elif action == "leave":
            client.leave(conversation_id)
            ctx.profile.forget_group(conversation_id)
            print("Left the group; this device deleted its keys for it.")
        elif action == "remove":
            for who in args.users:
                client.remove(conversation_id, ctx.profile.user_id_of(who))
                print(f"Removed {who}; the group's keys rotate with the next message.")
    except NotAllowedError as error:
        raise UserError(f"Only the group's admins may do that ({error}).") from None
    except VeilError as error:
        if error.status == 403:
            raise UserError(f"Only the group's admins may do that ({error.detail.rstrip('.')}).") from None
        if error.status == 409:
            raise UserError(f"Not possible now: {error.detail.rstrip('.')}.") from None
        raise
