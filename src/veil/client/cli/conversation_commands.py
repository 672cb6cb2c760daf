"""`veil-client` commands about conversations: conversations, chat, send, history, send-file,
get-file and group create|invite|accept|decline|leave|remove.

A conversation is named the way a person would: a group by the name given at `group create` (or
`group accept --name`) or its id, a direct conversation by the other person's address-book name or
user id (see `Context.conversation_with`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

from veil.client.cli.account_commands import note
from veil.client.cli.chat import describe, run_chat
from veil.client.cli.context import Context
from veil.client.cli.failures import UserError
from veil.client.cli.live import LiveFeed
from veil.client.protocol.attachments import FileReference
from veil.client.sdk.models import Conversation, GroupMessage, NotAllowedError, VeilError


def _title(ctx: Context, conversation: Conversation) -> str:
    if conversation.type == "group":
        name = ctx.profile.group_name_of(conversation.conversation_id)
        return f"group {name}" if name else f"group {conversation.conversation_id}"
    others = [m.user_id for m in conversation.members if m.user_id != ctx.profile.user_id]
    return ", ".join(ctx.profile.name_of(user_id) for user_id in others) or "yourself"


def conversations(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    found = client.conversations()
    if not found:
        print("No conversations yet: `veil-client chat NAME` or `veil-client group create NAME` starts one.")
    for conversation in found:
        members = ", ".join(
            ctx.profile.name_of(m.user_id) + (" (invited)" if m.state == "invited" else "")
            for m in conversation.members
        )
        label = _title(ctx, conversation)
        if conversation.type == "group":
            label = ctx.profile.group_name_of(conversation.conversation_id) or "(no local name)"
        print(
            f"{conversation.type:6} {conversation.conversation_id}  {label}: "
            f"{conversation.last_seq} message{'' if conversation.last_seq == 1 else 's'}, members {members}"
        )
        mine = next((m for m in conversation.members if m.user_id == client.user_id), None)
        if mine is not None and mine.state == "invited":
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
    if not messages:
        print(f"No messages with {_title(ctx, conversation)} yet.")
    for message in messages:
        print(f"#{message.seq} {describe(message, ctx.profile)}")


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
            raise UserError(f"Message #{seq} could not be decrypted: {message.error}")
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


def group(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    action = args.group_command
    if action == "create":
        if args.name in ctx.profile.groups:
            raise UserError(f"You already have a group named {args.name!r}.")
        conversation = client.create_group()
        ctx.profile.name_group(args.name, conversation.conversation_id)
        print(f"Created group {args.name} ({conversation.conversation_id}).")
        note(f"Invite people with `veil-client group invite {args.name} NAME`.")
        return
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
