"""Where `veil-client` takes the account password and the key store passphrase from: one order for
every command, on a terminal and in a pipe alike (docs/adr/0022).

- The account password: `--password-stdin` (the first line of standard input, read before anything
  else, like `docker login --password-stdin`), else `VEIL_PASSWORD`, else asked.
- The key store passphrase: the profile's unlock agent (`veil-client unlock`, which hands out the
  derived key, not the passphrase; see `Context.client`), else `VEIL_PASSPHRASE`, else asked.
- A command that needs both asks for the password first, then the passphrase, then any emailed code.
- A secret being chosen (a new password, a new key store's passphrase) is typed twice on a
  terminal; from a pipe or a variable it is taken as given. Either way a new key store's passphrase
  may not be the account password: one leaked secret would then give both the account and its keys
  (a script that piped the same line twice used to do exactly that).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from veil.client.cli.failures import UserError
from veil.client.cli.prompts import ask_secret

PASSWORD_VARIABLE = "VEIL_PASSWORD"  # noqa: S105 (the name of a variable)
PASSPHRASE_VARIABLE = "VEIL_PASSPHRASE"  # noqa: S105 (the name of a variable)

PASSWORD_SOURCES = f"pass --password-stdin or set {PASSWORD_VARIABLE}"
PASSPHRASE_SOURCES = f"set {PASSPHRASE_VARIABLE}, or run `veil-client unlock` first"
PASSPHRASE_IS_PASSWORD = (
    "The key store's passphrase must differ from the account password (one leaked secret would "
    f"give both the account and its keys); set {PASSPHRASE_VARIABLE} to another passphrase, or "
    "type another one."
)


def password_from_stdin() -> str:
    """The first line of standard input, for `--password-stdin` (read before any other answer)."""
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise UserError("--password-stdin was given but the first line of standard input is empty.")
    return line


def account_password(from_stdin: str | None, *, choosing: bool = False) -> str:
    """The account password (`choosing` it at sign-up or reset: typed twice on a terminal)."""
    if from_stdin is not None:
        return from_stdin
    if configured := os.environ.get(PASSWORD_VARIABLE):
        return configured
    prompt = "Choose a password: " if choosing else "Password: "
    return ask_secret("password", prompt, confirm=choosing, otherwise=PASSWORD_SOURCES)


def new_password() -> str:
    """The password replacing the current one in `veil-client password`: asked (on a pipe, the line
    after the current password's), since the sources above hold the current one."""
    return ask_secret("new password", "New password: ", confirm=True)


def keystore_passphrase(directory: Path, *, creating: bool, account_password: str | None) -> str:
    """The passphrase of the key store in `directory`; when `creating` it, one that differs from
    `account_password` (if this command asked for that)."""
    passphrase = os.environ.get(PASSPHRASE_VARIABLE) or ask_secret(
        "key store passphrase",
        f"Choose a passphrase for the key store in {directory}: " if creating else "Key store passphrase: ",
        confirm=creating,
        otherwise=f"set {PASSPHRASE_VARIABLE}" if creating else PASSPHRASE_SOURCES,
    )
    if creating and account_password is not None and passphrase == account_password:
        raise UserError(PASSPHRASE_IS_PASSWORD)
    return passphrase
