"""`veil-client`: an end-to-end-encrypted chat client for the terminal, on top of `veil.client`.

This module only parses arguments, funnels every failure into one readable line on standard
error with exit status 1 (`failures.explain`), and prints what the client warned about (devices it
refused, keys that changed) as `warning: ` lines on standard error. The commands live in
`account_commands`, `trust_commands` and `conversation_commands`, the interactive loop in `chat`,
the profile (key store, address book) in `profile`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from veil.client.cli import account_commands as account
from veil.client.cli import backup_commands as backup
from veil.client.cli import conversation_commands as conversation
from veil.client.cli import transparency_commands as transparency
from veil.client.cli import trust_commands as trust
from veil.client.cli import unlock_commands as unlocking
from veil.client.cli.context import Context
from veil.client.cli.failures import explain
from veil.client.cli.profile import DEFAULT_PROFILE, DEFAULT_URL, Profile

Command = Callable[[Context, argparse.Namespace], None]

DESCRIPTION = """\
End-to-end-encrypted messaging with a Veil server. Keys never leave this machine: they live in an
encrypted key store under ~/.veil-client/PROFILE/, opened with a passphrase (see "secrets" below).

The server has no lookup by email, so people swap user ids (`whoami` prints yours) and keep them in
an address book: `contacts add bob@example.org USER_ID`, then `chat bob@example.org`.

Only devices your master key approved get your messages: the first device you sign in on holds it;
each later one shows a link code that you approve on the first (`devices approve CODE`). Compare
safety numbers with the people you talk to (`verify USER`): only that shows their keys are theirs.

When standard input is not a terminal, passwords, passphrases and codes are read from it, one line
each, in the order under "secrets" below, with no confirmation of new ones."""

EPILOG = """\
secrets, in the same order for every command, on a terminal and in a pipe:
  account password     --password-stdin (the first line of standard input), else VEIL_PASSWORD,
                       else asked
  key store passphrase the unlock agent (`veil-client unlock`), else VEIL_PASSPHRASE, else asked
  A command that needs both asks the password first, then the passphrase, then an emailed code.
  New ones (a password or key store being created) are typed twice on a terminal; a key store's
  passphrase may never be the account password. `unlock [--minutes N]` keeps the key store open
  for N minutes (default 15, at most 24 hours), like ssh-agent; `lock` closes it now.

examples:
  veil-client --ca-file .data/tls/ca.pem register ada@example.org   (asks for the emailed code)
  veil-client reset-password ada@example.org
  printf '%s\\n' "$PASSWORD" | VEIL_PASSPHRASE=... veil-client login --password-stdin ada@example.org
  veil-client unlock --minutes 60 && veil-client send bob@example.org "no passphrase asked"
  veil-client devices approve VL1-...   (on your first device, the code a new one shows)
  veil-client contacts add bob@example.org 2a6e1f0c-...
  veil-client verify bob@example.org    (compare the safety number with Bob)
  veil-client chat bob@example.org
  veil-client group create book-club && veil-client group invite book-club bob@example.org
  veil-client send-file book-club notes.pdf"""


def _add_code_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--request", metavar="REQUEST_ID", help="finish a request made before")
    parser.add_argument("--code", help="the six-digit code from the email (asked for if not given)")


DEVICES_USAGE = """\
veil-client devices [USER]
       veil-client devices link [--wait SECONDS] [--no-qr]
       veil-client devices approve CODE [--primary]"""


def _add_trust_commands(command: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    sub = command("devices", trust.devices, "devices and whether their owner approved them; link, approve")
    sub.usage = DEVICES_USAGE
    sub.description = (
        "A user's devices (yours by default), their fingerprints and whether their owner's master key "
        "approved them. `link` shows this device's link code (and a QR code) and waits until a device "
        "you already use approves it; `approve CODE` approves a new device from a primary one."
    )
    sub.add_argument(
        "target", nargs="?", metavar="USER | link | approve", help="a contact or user id, or an action"
    )
    sub.add_argument("code", nargs="?", help="for approve: the link code the new device shows")
    sub.add_argument("--primary", action="store_true", help="approve: let the device approve others too")
    sub.add_argument("--wait", type=_seconds, metavar="SECONDS", help="link: how long to wait (default 300)")
    sub.add_argument("--no-qr", action="store_true", help="link: do not draw the code as a QR code")
    _add_json_option(sub)
    sub = command("verify", trust.verify, "compare your safety number with someone and mark them verified")
    sub.add_argument("user", help="a contact's name or a user id")
    sub.add_argument("--scan", metavar="TEXT", help="the text of their safety-number QR code, as scanned")
    sub.add_argument("--yes", action="store_true", help="the numbers match (do not ask)")
    sub = command("accept-key", trust.accept_key, "trust a verified contact's new master key")
    sub.add_argument("user", help="a contact's name or a user id")
    sub = command(
        "transparency", transparency.transparency, "the key log: its head, your keys' history, held chats"
    )
    sub.add_argument("action", nargs="?", choices=("show", "resume"), default="show")
    sub.add_argument("conversation", nargs="?", help="resume: the held conversation (id or group name)")
    sub = command("identity", trust.identity, "your account's master key")
    actions = sub.add_subparsers(dest="identity_command", metavar="ACTION", required=True)
    _add_password_stdin_option(
        actions.add_parser(
            "reset", help="a new master key, after losing every device that held it (password asked)"
        )
    )


def _seconds(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    return int(text)


def _version() -> str:
    try:
        return version("veil")
    except PackageNotFoundError:
        return "unknown"


def _add_password_stdin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the account password from the first line of standard input (else VEIL_PASSWORD)",
    )


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document, for scripts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veil-client",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veil-client {_version()}")
    parser.add_argument(
        "--url", help=f"the Veil server (VEIL_URL; default: the last login's, or {DEFAULT_URL})"
    )
    parser.add_argument("--ca-file", help="trust this CA certificate (VEIL_CA_FILE), e.g. .data/tls/ca.pem")
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, help="which account on this machine (default: %(default)s)"
    )
    parser.add_argument(
        "--home", type=Path, help="where profiles live (VEIL_CLIENT_HOME; default ~/.veil-client)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Command, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(handler=handler)
        return sub

    for name, handler, summary in (
        ("register", account.register, "create an account (emailed code) and sign in on this machine"),
        ("login", account.login, "sign in (this machine becomes a new device)"),
    ):
        sub = command(name, handler, summary)
        sub.add_argument("email")
        _add_password_stdin_option(sub)
        sub.add_argument("--device-name", default="veil-client", help="shown in your session list")
        if name == "register":
            sub.add_argument("--invite", metavar="CODE", help="an invitation, where sign-up needs one")
    sub = command("activate", account.activate, "finish a sign-up started with `register` (emailed code)")
    sub.add_argument("email")
    sub.add_argument("code", nargs="?", help="the six-digit code from the email (asked for if not given)")
    _add_password_stdin_option(
        command("password", account.password, "change your password; your other devices are signed out")
    )
    sub = command(
        "reset-password",
        account.reset_password,
        "set a new password with an emailed code (signs out everywhere)",
    )
    sub.add_argument("email")
    sub.add_argument("--code", help="finish a reset whose code you already have (no new email is sent)")
    _add_password_stdin_option(sub)
    command("logout", account.logout, "sign out; the server forgets this device's keys")
    command("whoami", account.whoami, "your email, user id and this device's fingerprint")
    sub = command(
        "unlock", unlocking.unlock, "keep the key store open for a while (asks the passphrase once)"
    )
    sub.add_argument(
        "--minutes",
        type=unlocking.minutes,
        default=unlocking.DEFAULT_MINUTES,
        help="how long (default: %(default)s; at most 1440)",
    )
    command("lock", unlocking.lock, "close the key store now: commands ask for the passphrase again")
    _add_trust_commands(command)

    sub = command("contacts", account.contacts, "the local address book (name -> user id)")
    contacts = sub.add_subparsers(dest="contacts_command", metavar="ACTION")
    add = contacts.add_parser("add", help="remember a user id under a name (an email, say)")
    add.add_argument("name")
    add.add_argument("user_id")
    listing = contacts.add_parser("list", help="everyone in the address book")
    # SUPPRESS: the subcommand's own default must not undo a `--json` given before `list`.
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    _add_json_option(sub)
    remove = contacts.add_parser("remove", help="forget a name")
    remove.add_argument("name")

    sub = command(
        "block", account.block, "stop someone inviting you, messaging you directly or reaching your devices"
    )
    sub.add_argument("user", help="a contact's name or a user id")
    sub = command("unblock", account.unblock, "lift a block")
    sub.add_argument("user", help="a contact's name or a user id")
    _add_json_option(command("blocks", account.blocks, "the people you blocked"))

    _add_json_option(
        command("conversations", conversation.conversations, "your conversations and invitations")
    )
    sub = command("chat", conversation.chat, "talk live: type to send; /file PATH, /members, /verify, /quit")
    sub.add_argument("target", help="a contact, a user id, or a group")
    sub.add_argument(
        "--last", type=int, default=20, help="how much history to show first (default: %(default)s)"
    )
    sub = command("send", conversation.send, "send one text message")
    sub.add_argument("target")
    sub.add_argument("text", nargs="+")
    sub = command("history", conversation.history, "print a conversation's messages")
    sub.add_argument("target")
    sub.add_argument("--last", type=int, default=50, help="how many (default: %(default)s)")
    _add_json_option(sub)
    sub = command("send-file", conversation.send_file, "encrypt and send a file")
    sub.add_argument("target")
    sub.add_argument("path")
    sub = command("get-file", conversation.get_file, "download, check and decrypt a file message")
    sub.add_argument("target")
    sub.add_argument("seq", help="the message number, as history shows it (#7 or 7)")
    sub.add_argument("--output", "-o", help="where to save it (default: the sender's file name)")
    sub.add_argument("--force", action="store_true", help="overwrite an existing file")

    sub = command("group", conversation.group, "create and manage groups")
    groups = sub.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    create = groups.add_parser("create", help="a new group; its name is end-to-end encrypted for members")
    create.add_argument("name", help="the group's name, also its local name here")
    create.add_argument("--description", help="what the group is for (members see it, the server does not)")
    invite = groups.add_parser("invite", help="invite people (admins)")
    invite.add_argument("group")
    invite.add_argument("users", nargs="+", metavar="user")
    accept = groups.add_parser("accept", help="join a group you were invited to")
    accept.add_argument("group", help="its id from `conversations`, or who invited you")
    accept.add_argument("--name", help="a local name for it")
    decline = groups.add_parser("decline", help="turn an invitation down")
    decline.add_argument("group", help="its id from `conversations`, or who invited you")
    leave = groups.add_parser("leave", help="leave a group")
    leave.add_argument("group")
    remove_member = groups.add_parser("remove", help="remove members (admins); the keys rotate")
    remove_member.add_argument("group")
    remove_member.add_argument("users", nargs="+", metavar="user")

    sub = command(
        "export",
        account.export,
        "a copy of your data: the server's (emailed code) and your decrypted history",
    )
    sub.add_argument("--output", "-o", help="the JSON file to write (default: veil-export-DATE.json)")
    sub.add_argument("--force", action="store_true", help="overwrite an existing file")
    sub.add_argument(
        "--history-only",
        action="store_true",
        help="only the messages this device can read, as JSON (no emailed code); shape: "
        '{"format": "veil-history/1", "conversations": [{"conversation_id", "type", "name", "members", '
        '"messages": [{"seq", "message_id", "sender_id", "sender_name", "created_at", "content_type", '
        '"text", "file", "failure", "error"}]}]}',
    )
    _add_code_options(sub)
    backup.add_backup_command(command)
    sub = command("delete-account", account.delete_account, "erase your account (password and emailed code)")
    sub.add_argument("--yes", action="store_true", help="do not ask to type 'delete' first")
    _add_password_stdin_option(sub)
    _add_code_options(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "contacts" and args.contacts_command is None:
        args.contacts_command = "list"
    url = args.url or DEFAULT_URL
    keystore: str | None = None
    ctx: Context | None = None
    try:
        profile = Profile.open(args.home, args.profile)
        keystore = str(profile.keystore)
        ctx = Context.create(
            profile, args.url, args.ca_file, password_stdin=getattr(args, "password_stdin", False)
        )
        url = ctx.url
        handler: Command = args.handler
        handler(ctx, args)
        print_warnings(ctx)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        print_warnings(ctx)
        return 130
    except Exception as error:
        print_warnings(ctx)  # before the failure, which stays the last line
        print(f"veil-client: {explain(error, url=url, keystore=keystore)}", file=sys.stderr)
        return 1
    finally:
        if ctx is not None:
            ctx.close()
    return 0


def print_warnings(ctx: Context | None) -> None:
    """What the client refused or noticed during the command (a device nobody approved, a changed
    key), one `warning: ` line each on standard error."""
    if ctx is None:
        return
    for warning in ctx.take_warnings():
        print(f"warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
