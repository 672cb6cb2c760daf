"""`veil-client` commands about the account and this device: register, activate, login, password,
reset-password, logout, whoami, contacts, block, unblock, blocks, export and delete-account (devices
and trust are in `trust_commands`).

Results go to standard output, prompts and notes to standard error. Nothing here prints a password,
token, key or emailed code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veil.client.cli.context import Context
from veil.client.cli.credentials import new_password
from veil.client.cli.export_command import export_history, history_document
from veil.client.cli.failures import UserError
from veil.client.cli.output import emit_json, write_private
from veil.client.cli.prompts import ask_code, ask_line, checked_code
from veil.client.cli.trust_commands import ROLES, approval_hint
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import VeilError


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _sign_in(ctx: Context, client: VeilClient, email: str, password: str, device_name: str) -> None:
    try:
        client.login(email, password, device_name=device_name)
    except VeilError as error:
        if error.status == 401:
            raise UserError("Wrong email or password.") from None
        raise
    ctx.remember_server(email, client.user_id)
    print(f"Signed in as {email}.")
    print(f"Your user id: {client.user_id}")
    print(f"This device: {client.device_id} (fingerprint {client.crypto.fingerprint()})")
    if client.identity_role == "pending":
        _waits_for_approval(client)
    else:
        print(f"This device is {ROLES.get(client.identity_role, client.identity_role)}.")
        note("Give your user id to the people you want to talk to; they add you with `contacts add`.")


def _waits_for_approval(client: VeilClient) -> None:
    """A later device of an account reads nothing new until one the user already has approves it."""
    code = client.link_code()
    print(f"This device is {ROLES['pending']}.")
    print(f"Link code: {code}")
    note(
        f"{approval_hint(code)} Then `veil-client devices link` here confirms it (and shows the code as "
        "a QR code to scan)."
    )


def register(ctx: Context, args: argparse.Namespace) -> None:
    """Sign up in one run, as a person does: password, then the code the server emails, then the
    first login. Interrupted before the code, `activate` finishes it."""
    password = ctx.account_password(choosing=True)
    client = ctx.client()  # the key store's passphrase is chosen now, before anything is sent
    try:
        client.register(args.email, password, invite_code=args.invite)
    except VeilError as error:
        raise _signup_refused(error, invited=args.invite is not None) from None
    note(
        f"A six-digit code was emailed to {args.email} (if the address already has an account, "
        "its owner gets a notice instead)."
    )
    code = ask_code(f"veil-client activate {args.email} CODE")
    user_id = _activate(client, args.email, code)
    print(f"Registered {args.email} (user id {user_id}).")
    _sign_in(ctx, client, args.email, password, args.device_name)


def activate(ctx: Context, args: argparse.Namespace) -> None:
    """Finish a sign-up started earlier with `register` (the code is asked for if not given)."""
    code = (
        checked_code(args.code)
        if args.code is not None
        else ask_code(f"veil-client activate {args.email} CODE")
    )
    user_id = _activate(ctx.client_for(args.email), args.email, code)
    print(f"Registered {args.email} (user id {user_id}).")
    note(f"Sign in with `veil-client login {args.email}`.")


def _signup_refused(error: VeilError, *, invited: bool) -> Exception:
    if error.status == 403:
        hint = "" if invited else " If you were invited, pass the invitation with --invite CODE."
        return UserError(f"The server refused the sign-up: {error.detail or error.title}.{hint}")
    return error


def _activate(client: VeilClient, email: str, code: str) -> str:
    try:
        return client.verify_registration(email, code)
    except VeilError as error:
        if error.status == 400:
            raise UserError(
                "The code was not accepted (wrong, expired or already used, or the address already "
                f"has an account). Try `veil-client activate {email}` again, or `register` for a new code."
            ) from None
        raise


def login(ctx: Context, args: argparse.Namespace) -> None:
    password = ctx.account_password()  # first, as in every command that needs both secrets
    client = ctx.client()
    if client.signed_in and ctx.profile.email == args.email:
        # A session that still works stays: logging in again would make a new device and end this
        # one, and with it every session key this device holds.
        with contextlib.suppress(VeilError):
            client.account()
            print(f"Already signed in as {args.email} (`logout` first to start a new device).")
            print(f"Your user id: {client.user_id}")
            if client.identity_role == "pending":
                _waits_for_approval(client)
            return
    _sign_in(ctx, client, args.email, password, args.device_name)


def password(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_key_store()
    current = ctx.account_password()
    new = new_password()
    client = ctx.signed_in_client()
    try:
        client.change_password(current, new)
    except VeilError as error:
        if error.status == 403:
            raise UserError("Wrong current password; nothing was changed.") from None
        raise
    print("Password changed. Your other devices were signed out and their keys removed; this one stays.")


def reset_password(ctx: Context, args: argparse.Namespace) -> None:
    """Set a new password with a code sent by email, for when the old one is lost.

    The server then ends every session of the account and removes all its devices: this machine's
    too, if it was signed in to the account, so it must log in again as a new device."""
    given_code = None if args.code is None else checked_code(args.code)  # refused before anything is asked
    new = ctx.account_password(choosing=True)  # the password, then the passphrase, then the code
    client = ctx.client_for(args.email)  # the passphrase (if any) is asked before anything is sent
    if given_code is None:
        client.request_password_reset(args.email)
        note(f"If {args.email} has an account, a six-digit code was emailed to it.")
        code = ask_code(f"veil-client reset-password {args.email} --code CODE")
    else:
        code = given_code
    try:
        client.confirm_password_reset(args.email, code, new)
    except VeilError as error:
        if error.status == 400:
            raise UserError(
                "The code was not accepted (wrong, expired or already used); nothing was changed. "
                f"`veil-client reset-password {args.email}` sends a new one."
            ) from None
        raise
    print(f"Password reset. Every device of {args.email} was signed out and its keys were removed.")
    note(f"Sign in again with `veil-client login {args.email}` (this machine becomes a new device).")


def logout(ctx: Context, args: argparse.Namespace) -> None:
    if not ctx.profile.keystore.exists() or not ctx.client().signed_in:
        print("Not signed in.")
        return
    client = ctx.client()
    try:
        client.logout()
    except VeilError as error:
        if error.status != 401:  # an expired session is as good as ended
            raise
    print("Signed out. This device's keys were removed from the server; `login` makes a new device.")


def whoami(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    account = client.account()
    print(f"{account['email']} ({account['status']})")
    print(f"Your user id: {client.user_id}")
    print(f"This device: {client.device_id} (fingerprint {client.crypto.fingerprint()})")
    print(f"This device is {ROLES.get(client.identity_role, client.identity_role)}.")
    print(f"Server: {ctx.url}")


def contacts(ctx: Context, args: argparse.Namespace) -> None:
    profile = ctx.profile
    if args.contacts_command == "add":
        profile.add_contact(args.name, args.user_id)
        print(f"Added {args.name} ({profile.contacts[args.name]}).")
    elif args.contacts_command == "remove":
        profile.remove_contact(args.name)
        print(f"Removed {args.name}.")
    elif args.json:
        emit_json([{"name": name, "user_id": user_id} for name, user_id in sorted(profile.contacts.items())])
    else:
        if not profile.contacts:
            print("Your address book is empty; `veil-client contacts add NAME USER_ID` adds someone.")
        for name, user_id in sorted(profile.contacts.items()):
            print(f"{name}\t{user_id}")


def block(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    user_id = ctx.profile.user_id_of(args.user)
    if user_id == client.user_id:
        raise UserError("That is you; you cannot block yourself.")
    client.block(user_id)
    print(f"Blocked {ctx.profile.name_of(user_id)} ({user_id}).")
    note("They can no longer invite you, start a direct conversation with you or send to your devices.")


def unblock(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.signed_in_client()
    user_id = ctx.profile.user_id_of(args.user)
    client.unblock(user_id)
    print(f"Unblocked {ctx.profile.name_of(user_id)} ({user_id}).")


def blocks(ctx: Context, args: argparse.Namespace) -> None:
    found = ctx.signed_in_client().blocks()
    if args.json:
        emit_json(
            [
                {
                    "user_id": entry.user_id,
                    "name": ctx.profile.name_of(entry.user_id),
                    "since": entry.created_at,
                }
                for entry in found
            ]
        )
        return
    if not found:
        print("You have not blocked anyone.")
    for entry in found:
        print(f"{ctx.profile.name_of(entry.user_id)}\t{entry.user_id}\tsince {entry.created_at}")


def _code(args: argparse.Namespace, request_id: str, command: str) -> str:
    if args.code is not None:
        return checked_code(str(args.code))
    return ask_code(f"veil-client {command} --request {request_id} --code CODE")


def _confirm(client: VeilClient, request_id: str, code: str) -> dict[str, Any]:
    try:
        return client.confirm_request(request_id, code)
    except VeilError as error:
        if error.status == 400:
            raise UserError(f"The code was not accepted: {error.detail}") from None
        if error.status == 404:
            raise UserError("There is no such request (or it is not yours).") from None
        raise


def _check_request_arguments(args: argparse.Namespace, command: str) -> None:
    if args.code is not None and args.request is None:
        raise UserError(f"--code needs --request REQUEST_ID (printed by `veil-client {command}`).")


def export(ctx: Context, args: argparse.Namespace) -> None:
    _check_request_arguments(args, "export")
    output = Path(args.output or f"veil-export-{datetime.now(UTC):%Y%m%d-%H%M%S}.json")
    if output.exists() and not args.force:
        raise UserError(f"{output} already exists; choose another --output or pass --force.")
    if args.history_only:  # only this device can read the messages: nothing is asked of the server's export
        export_history(ctx, output)
        return
    client = ctx.signed_in_client()
    request_id = args.request
    if request_id is None:
        request_id = client.request_export()
        note(f"A six-digit code was emailed to you (request {request_id}).")
    confirmation = _confirm(client, request_id, _code(args, request_id, "export"))
    archive = client.fetch_export(confirmation) if "download" in confirmation else confirmation
    archive["client_history"] = history_document(ctx, client)  # the text the server cannot read
    write_private(output, json.dumps(archive, indent=2, sort_keys=True) + "\n")
    print(f"Wrote your data to {output} ({output.stat().st_size} bytes).")


def delete_account(ctx: Context, args: argparse.Namespace) -> None:
    _check_request_arguments(args, "delete-account")
    ctx.require_key_store()
    request_id = args.request
    if request_id is None:
        if not args.yes:
            who = ctx.profile.email or "your account"
            note(f"This disables {who} at once and erases its data after the grace period.")
            if ask_line("Type 'delete' to continue: ") != "delete":
                raise UserError("Nothing was deleted.")
        password = ctx.account_password()
        try:
            request_id = ctx.signed_in_client().request_erasure(password)
        except VeilError as error:
            if error.status == 403:
                raise UserError("Wrong password; nothing was deleted.") from None
            raise
        note(f"A six-digit code was emailed to you (request {request_id}).")
    _confirm(ctx.signed_in_client(), request_id, _code(args, request_id, "delete-account"))
    ctx.close()
    ctx.profile.erase()  # the keys belong to an account that no longer signs in
    print("Your account is disabled and every session ended; its data is erased after the grace period.")
