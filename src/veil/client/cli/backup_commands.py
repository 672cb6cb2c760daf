"""`veil-client backup create|restore|status|delete`: an end-to-end-encrypted backup of what a new
device could not learn again (history, the master key, verifications, group names, the address book)
in the account's backup slot on the server, under a recovery key shown once (sdk/backup.py).

The recovery key goes to standard output once, when the backup is made, and nowhere else: it is
not saved on disk, not logged, and never sent to the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from veil.client.cli.account_commands import note
from veil.client.cli.context import Context
from veil.client.cli.export_command import readable_conversations
from veil.client.cli.failures import UserError
from veil.client.cli.output import emit_json
from veil.client.cli.profile import Profile, as_uuid
from veil.client.cli.prompts import ask_secret, ask_yes
from veil.client.cli.trust_commands import ROLES, show_qr
from veil.client.protocol.backup import BackupDecryptionError, BackupOwnerError
from veil.client.protocol.backup_contents import MalformedBackupContentsError
from veil.client.protocol.errors import CryptoError
from veil.client.protocol.recovery_key import RecoveryKeyTextError
from veil.client.sdk.backup import BackupReplacedError, NoBackupError
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import TrustError, VeilError

RECOVERY_KEY_VARIABLE = "VEIL_RECOVERY_KEY"
_GROUPS_PER_LINE = 7

NO_BACKUP = (
    "There is no backup of this account on the server. `veil-client backup create` on a device that "
    "has your history makes one."
)
WRONG_KEY = (
    "This recovery key does not open your backup, or the backup was damaged or replaced on the "
    "server. Nothing was changed."
)
OTHER_ACCOUNT = (
    "The server handed out another account's backup instead of yours: it was refused and nothing was changed."
)
TOO_LARGE = "The backup is larger than the server accepts ({detail})."


def add_backup_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `backup` and its actions with the parser `main` builds (`command(name, handler,
    summary)` makes a subcommand)."""
    sub = command(
        "backup", backup, "an end-to-end-encrypted backup on the server, to restore on a new device"
    )
    sub.description = (
        "Your history, master key, verified contacts, group names and address book, encrypted under a "
        "recovery key shown once (the server stores ciphertext only). `create` makes one (a new key "
        "each time, replacing the last backup); `restore` on a new device (signed in to the same "
        f"account) takes it in and approves the device; the key is asked for, or read from "
        f"{RECOVERY_KEY_VARIABLE}."
    )
    actions = sub.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="back up now and show the recovery key once")
    create.add_argument("--no-qr", action="store_true", help="do not draw the recovery key as a QR code")
    create.add_argument(
        "--yes", action="store_true", help="on a device without the master key: replace the backup anyway"
    )
    actions.add_parser("restore", help="take in your backup on this device (recovery key asked)")
    status = actions.add_parser("status", help="whether the server holds a backup, its size and date")
    status.add_argument("--json", action="store_true", help="print one JSON document, for scripts")
    delete = actions.add_parser("delete", help="delete your backup from the server")
    delete.add_argument("--yes", action="store_true", help="do not ask first")


def backup(ctx: Context, args: argparse.Namespace) -> None:
    action = {"create": _create, "restore": _restore, "status": _status, "delete": _delete}
    action[args.backup_command](ctx, args)


def _create(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    if client.identity_role == "linked" and not args.yes and client.backup_status() is not None:
        # The backup there may hold the master key (made on a primary device); this one would not.
        raise UserError(
            "This device does not hold your account's master key, so a backup made here could not "
            "approve a new device, and it would replace the backup on the server (which may). Make "
            "the backup on your primary device, or pass --yes to replace it anyway."
        )
    _read_everything(client)  # messages not read yet are in no cache, and a new device cannot read them
    try:
        made = client.create_backup(address_book(ctx.profile))
    except VeilError as error:
        if error.status == 413:
            raise UserError(TOO_LARGE.format(detail=error.detail or error.title)) from None
        raise
    except BackupReplacedError as error:
        raise UserError(str(error)) from None
    recovery_key, status = made.recovery_key, made.status
    print(
        f"Your backup is on the server, end-to-end encrypted ({status.size} bytes, made {status.created_at})."
    )
    print("Your recovery key (shown only now; it is not saved anywhere):")
    print()
    groups = recovery_key.split("-")
    for start in range(0, len(groups), _GROUPS_PER_LINE):
        print("    " + "-".join(groups[start : start + _GROUPS_PER_LINE]))
    print()
    show_qr(recovery_key, wanted=not args.no_qr)
    note(
        "Write it down or print it, and keep it offline, away from this device: with it and your "
        "password, `veil-client backup restore` on a new device brings back your history and approves "
        "that device. Without it the backup cannot be opened, by anyone. A new `backup create` makes a "
        "new key and replaces this backup."
    )


def _read_everything(client: VeilClient) -> None:
    """Read every joined conversation to the end, so that what this device can still decrypt is in
    its cache (and so in the backup). A conversation that cannot be read now is skipped: its reason
    shows in `history`."""
    for conversation in readable_conversations(client):
        try:
            client.history(conversation.conversation_id)
        except (TrustError, VeilError, CryptoError):
            continue


def address_book(profile: Profile) -> dict[str, Any]:
    """The local names the backup carries: contacts and groups, as the profile keeps them."""
    return {"contacts": dict(profile.contacts), "groups": dict(profile.groups)}


def _restore(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    text = os.environ.get(RECOVERY_KEY_VARIABLE) or ask_secret(
        "recovery key", "Recovery key: ", otherwise=f"set {RECOVERY_KEY_VARIABLE}"
    )
    try:
        restored = client.restore_backup(text)
    except RecoveryKeyTextError as error:
        raise UserError(str(error)) from None
    except NoBackupError:
        raise UserError(NO_BACKUP) from None
    except BackupDecryptionError:
        raise UserError(WRONG_KEY) from None
    except BackupOwnerError:
        raise UserError(OTHER_ACCOUNT) from None
    except MalformedBackupContentsError:
        raise UserError(
            "The backup opened, but this version of veil-client cannot read what is in it. Nothing was "
            "changed."
        ) from None
    contacts, groups = merge_address_book(ctx.profile, restored.address_book)
    verified = restored.verified_contacts
    print(
        f"Restored your backup of {restored.created_at}: {restored.messages} message"
        f"{'' if restored.messages == 1 else 's'}, {contacts} contact{'' if contacts == 1 else 's'}, "
        f"{groups} group name{'' if groups == 1 else 's'}, {verified} verified contact"
        f"{'' if verified == 1 else 's'}."
    )
    role = client.identity_role
    if restored.approved:
        print(f"Your restored master key approved this device: it is {ROLES.get(role, role)}.")
    else:
        print(f"This device is {ROLES.get(role, role)}.")


def merge_address_book(profile: Profile, book: Any) -> tuple[int, int]:
    """Add the backup's names that this profile does not use yet (its own names win); how many
    contacts and group names were added. Entries that are not a name and a user id are skipped."""
    if not isinstance(book, dict):
        return 0, 0
    contacts = _names(book.get("contacts"))
    groups = _names(book.get("groups"))
    added_contacts = added_groups = 0
    for name, user_id in sorted(contacts.items()):
        canonical = as_uuid(user_id)
        if name in profile.contacts or canonical is None or as_uuid(name) is not None:
            continue
        profile.add_contact(name, canonical)
        added_contacts += 1
    for name, conversation_id in sorted(groups.items()):
        canonical = as_uuid(conversation_id)
        if name in profile.groups or canonical is None or as_uuid(name) is not None:
            continue
        if profile.group_name_of(canonical) is not None:
            continue
        profile.name_group(name, canonical)
        added_groups += 1
    return added_contacts, added_groups


def _names(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _status(ctx: Context, args: argparse.Namespace) -> None:
    status = ctx.signed_in_client().backup_status()
    if args.json:
        emit_json(
            None
            if status is None
            else {"size": status.size, "sha256": status.sha256, "created_at": status.created_at}
        )
        return
    if status is None:
        print("No backup on the server; `veil-client backup create` makes one.")
        return
    print(f"Your backup: {status.size} bytes, made {status.created_at} (SHA-256 {status.sha256}).")


def _delete(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    if not args.yes and sys.stdin.isatty():
        note("Without a backup, a lost device's history cannot be brought back.")
        if not ask_yes("Delete your backup from the server? [y/N] "):
            raise UserError("Nothing was deleted.")
    client.delete_backup()
    print("Your backup was deleted from the server.")
