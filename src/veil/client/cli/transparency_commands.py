"""`veil-client transparency`: the key-transparency log as this device sees it.

`transparency` (or `transparency show`) checks the log's latest head against the last one this
device saw, looks at the user's own entry (the monitor: every change of the account's master key or
approved devices, and whether this device made it), and lists the conversations held because a
member's head proved that the server shows different people different keys. `transparency resume
CONVERSATION` sends to a held conversation again, once the person has compared safety numbers.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from veil.client.cli.context import Context
from veil.client.cli.failures import UserError


def _when(timestamp_ms: int) -> str:
    if timestamp_ms == 0:
        return "at an unknown time"
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def transparency(ctx: Context, args: argparse.Namespace) -> None:
    if args.action == "resume":
        resume(ctx, args.conversation)
    elif args.conversation is not None:
        raise UserError("Only `transparency resume` takes a conversation.")
    else:
        show(ctx)


def show(ctx: Context) -> None:
    client = ctx.signed_in_client()
    head = client.transparency_head()
    root = head.root_hash.hex()[:16]
    print(
        f"Key log: {head.tree_size} entries, root {root}…, signed {_when(head.timestamp_ms)}; "
        "consistent with every head this device saw before."
    )
    changes = client.own_key_changes()
    print("Your keys, as the log records them (newest last):")
    for change in changes:
        mark = " " if change.expected else "!"
        print(f" {mark} v{change.version}, seen {_when(change.seen_at_ms)}: {change.description}")
    if not changes:
        print("   (no entry yet: your account has no master key)")
    if any(not change.expected for change in changes):
        print(
            "Entries marked ! were not made on this device. If you did not make them on another of your "
            "devices, change your password (`veil-client password`) and check `veil-client devices`."
        )
    held = client.held_conversations()
    for conversation_id, reason in held.items():
        print(f"Held: conversation {conversation_id}: {reason}")
    if held:
        print(
            "Nothing is sent to a held conversation. Compare safety numbers with its members "
            "(`veil-client verify USER`), then `veil-client transparency resume CONVERSATION`."
        )


def resume(ctx: Context, target: str | None) -> None:
    if target is None:
        raise UserError("Which conversation? `veil-client transparency resume CONVERSATION`.")
    client = ctx.signed_in_client()
    wanted = ctx.profile.groups.get(target, target)
    held = [c for c in client.held_conversations() if c == wanted or c.startswith(wanted)]
    if len(held) != 1:
        problem = "is not held: nothing to resume" if not held else "names more than one held conversation"
        raise UserError(f"Conversation {target} {problem}.")
    client.resume_conversation(held[0])
    print(f"Conversation {held[0]} is no longer held; messages go to it again.")
