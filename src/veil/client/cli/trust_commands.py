"""`veil-client` commands about whom this device trusts: devices (list, link, approve), verify
(safety numbers), accept-key and identity reset.

The server lists devices and master keys but cannot vouch for them; these commands are how a
person makes this device trust their own devices (approval by link code) and their contacts' keys
(safety numbers compared on both screens). Results go to standard output, explanations to
standard error.
"""

from __future__ import annotations

import argparse
import sys
import time

import segno

from veil.client.cli.context import Context
from veil.client.cli.failures import UserError
from veil.client.cli.output import emit_json
from veil.client.cli.prompts import ask_yes
from veil.client.protocol.identity import format_safety_number, parse_safety_number_qr, safety_number_qr
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import VeilError

LINK_POLL_SECONDS = 2.0
ROLES = {
    "primary": "primary (holds your account's master key: it approves your other devices)",
    "linked": "linked (approved by another of your devices)",
    "pending": "pending (waits for approval by a device you already use: it can read nothing new yet)",
}


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def show_qr(text: str, *, wanted: bool = True) -> None:
    """A QR code of `text` on the terminal; nothing when standard output is a file or a pipe,
    where the blocks would only be noise. Never a Micro QR, which few phone scanners read."""
    if wanted and sys.stdout.isatty():
        segno.make_qr(text).terminal(compact=True)


def approval_hint(code: str) -> str:
    return f"On a device you already use, run `veil-client devices approve {code}`."


# devices -----------------------------------------------------------------------------------------


def devices(ctx: Context, args: argparse.Namespace) -> None:
    """`devices [USER]`, `devices link` and `devices approve CODE` (one command, as people say it)."""
    action = args.target
    if action == "approve":
        if args.code is None:
            raise UserError(
                "Which device? `veil-client devices approve CODE` (the new device shows the code)."
            )
        _only_options(args, "devices approve", primary=True)
        approve(ctx, args.code, primary=args.primary)
    elif action == "link":
        if args.code is not None:
            raise UserError("`veil-client devices link` takes no code: it shows this device's own.")
        _only_options(args, "devices link", wait=True, no_qr=True)
        link(ctx, wait=args.wait, qr=not args.no_qr)
    else:
        if args.code is not None:
            raise UserError("`veil-client devices` takes one user at most.")
        _only_options(args, "devices [USER]", json=True)
        list_devices(ctx, action, as_json=args.json)


def _only_options(args: argparse.Namespace, action: str, **allowed: bool) -> None:
    given = {
        "primary": args.primary,
        "wait": args.wait is not None,
        "no_qr": args.no_qr,
        "json": args.json,
    }
    for name, used in given.items():
        if used and not allowed.get(name):
            option = "--" + name.replace("_", "-")
            raise UserError(f"{option} does not go with `veil-client {action}`.")


def list_devices(ctx: Context, who: str | None, *, as_json: bool = False) -> None:
    client = ctx.signed_in_client()
    mine = who is None
    user_id = client.user_id if who is None else ctx.profile.user_id_of(who)
    found = client.devices_of(user_id)
    name = ctx.profile.name_of(user_id)
    if as_json:
        emit_json(
            [
                {
                    "device_id": d.device_id,
                    "user_id": user_id,
                    "fingerprint": d.fingerprint,
                    "approved": d.approved,
                    "status": d.status,
                    "current": d.current,
                }
                for d in found
            ]
        )
        return
    if mine:
        print(f"This device is {ROLES.get(client.identity_role, client.identity_role)}.")
    if not found:
        print(f"{name}: no devices (not signed in anywhere).")
    for device in found:
        current = " (this device)" if device.current else ""
        print(f"{name}: device {device.device_id}{current}: {device.status}")
        print(f"    fingerprint {device.fingerprint}")
    if mine and client.identity_role == "pending":
        note(approval_hint(client.link_code()))
    elif not mine:
        if client.is_verified(user_id):
            note(f"You verified {name}'s safety number: only devices their master key approved count.")
        else:
            note(f"Compare safety numbers with {name} (`veil-client verify {who}`) to be sure of their key.")


def link(ctx: Context, *, wait: int | None, qr: bool) -> None:
    """Show this device's link code, then wait until a device of the user approves it."""
    client = ctx.signed_in_client()
    if client.identity_role != "pending" or client.poll_link():
        _say_approved(client)
        return
    code = client.link_code()
    print(f"Link code: {code}")
    show_qr(code, wanted=qr)
    seconds = 300 if wait is None else wait
    note(f"{approval_hint(code)} Waiting up to {seconds} s for it (Ctrl-C stops waiting).")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(LINK_POLL_SECONDS, left))
        if client.poll_link():
            _say_approved(client)
            return
    raise UserError(
        f"This device was not approved within {seconds} s; the code stays the same: approve it, then "
        "run `veil-client devices link` again."
    )


def _say_approved(client: VeilClient) -> None:
    print(f"This device is approved: it is {ROLES.get(client.identity_role, client.identity_role)}.")
    note("It reads what is sent from now on; messages sent before it was approved stay unreadable here.")


def approve(ctx: Context, code: str, *, primary: bool) -> None:
    client = ctx.signed_in_client()
    try:
        device_id = client.approve_device(code.strip(), primary=primary)
    except ValueError as error:
        raise UserError(f"That is not a device link code: {error}.") from None
    role = "primary: it holds your master key too" if primary else "linked"
    print(f"Approved device {device_id} ({role}).")
    note(
        "It was certified with your master key and sent what it needs, end to end encrypted; it reads "
        "new messages from now on. Contacts' clients send to it because your master key vouches for it."
    )


# verify and accept-key -----------------------------------------------------------------------------


def verify(ctx: Context, args: argparse.Namespace) -> None:
    """Show the safety number with a contact and record that both people compared it."""
    client = ctx.signed_in_client()
    user_id = _someone_else(ctx, client, args.user)
    name = ctx.profile.name_of(user_id)
    client.devices_of(user_id)  # takes note of the key the server shows now, so a change is seen
    if user_id in client.changed_identities():
        raise UserError(
            f"{name}'s master key changed since you verified them. Run `veil-client accept-key {args.user}` "
            "to see what that means and accept it, then compare safety numbers again with `verify`."
        )
    number = client.safety_number(user_id)
    print(f"Safety number with {name}:")
    groups = format_safety_number(number).split(" ")
    for row in range(0, len(groups), 4):
        print("    " + " ".join(groups[row : row + 4]))
    show_qr(safety_number_qr(number))
    if client.is_verified(user_id):
        note(f"(You verified {name} before.)")
    if args.scan is not None:
        try:
            parse_safety_number_qr(args.scan.strip())
        except ValueError as error:
            raise UserError(f"The scanned text is not a Veil safety number ({error}).") from None
        client.mark_verified(user_id, scanned=args.scan.strip())
        print(f"The scanned number matches: {name} is verified.")
        return
    if not args.yes:
        note(
            f"Compare it with the number {name}'s device shows for you (`veil-client verify` there), in "
            "person or on a call you trust."
        )
        if not _answered_yes("Do the numbers match on both devices? [y/N] "):
            print(f"{name} is not marked as verified.")
            note(
                "If the numbers differ, someone (the server, or whoever has a password) may be in the "
                "middle: do not trust this conversation until they match."
            )
            return
    client.mark_verified(user_id)
    print(f"{name} is verified.")
    note("If their master key ever changes, nothing is sent to them until you verify again or accept it.")


def _answered_yes(prompt: str) -> bool:
    try:
        return ask_yes(prompt)
    except UserError:  # no answer (an empty line, or the end of input) is the [N] default
        return False


def accept_key(ctx: Context, args: argparse.Namespace) -> None:
    """Trust a contact's new master key, after saying what a change means."""
    client = ctx.signed_in_client()
    user_id = _someone_else(ctx, client, args.user)
    name = ctx.profile.name_of(user_id)
    client.devices_of(user_id)  # takes note of the key the server shows now
    if user_id not in client.changed_identities():
        print(
            f"No new master key of {name} waits to be accepted (a change is held back only for people "
            "you verified; for others it is accepted with a warning)."
        )
        return
    note(
        f"{name}'s account has a new master key. Either they reset it (after losing every device that "
        "held it), or someone who knows their password, or runs the server, did so to read along. "
        "Accepting sends to the devices the new key approves."
    )
    client.accept_identity(user_id)
    print(f"Accepted {name}'s new master key; they are no longer marked as verified.")
    note(f"Compare safety numbers again, on a call or in person: `veil-client verify {args.user}`.")


def _someone_else(ctx: Context, client: VeilClient, who: str) -> str:
    user_id = ctx.profile.user_id_of(who)
    if user_id == client.user_id:
        raise UserError("That is you; safety numbers are compared with someone else.")
    return user_id


# identity reset ----------------------------------------------------------------------------------


def identity(ctx: Context, args: argparse.Namespace) -> None:
    """`identity reset`: a new master key for an account whose every primary device is lost."""
    ctx.require_key_store()
    note(
        "This gives your account a new master key, held by this device. Every other device of yours "
        "loses its approval (approve them again from here with `veil-client devices approve`), and "
        "everyone you talk to is warned that your key changed; those who verified you must verify again."
    )
    password = ctx.account_password()
    client = ctx.signed_in_client()
    try:
        client.reset_identity(password)
    except VeilError as error:
        if error.status == 403:
            raise UserError("Wrong password; the master key was not reset.") from None
        raise
    print(f"Your account has a new master key; this device is {ROLES['primary']}.")
