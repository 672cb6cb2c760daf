"""Asking the person at the keyboard, or reading the answer from a pipe.

On a terminal, secrets are read with `getpass` (no echo) and prompts go to standard error, so that
standard output stays the command's result. When standard input is not a terminal each answer is
the next line of it, which lets scripts and tests drive every command. Which secret is asked for,
and where else it may come from, is `credentials`'s business.
"""

from __future__ import annotations

import getpass
import re
import sys

from veil.client.cli.failures import UserError

_CODE = re.compile(r"^\d{6}$")


def interactive() -> bool:
    return sys.stdin.isatty()


def ask_line(prompt: str) -> str:
    """One answer; an empty answer or the end of input is an error."""
    if interactive():
        sys.stderr.write(prompt)
        sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise UserError(f"No answer to {prompt.strip().rstrip(':')!r} (standard input ended).")
    answer = line.rstrip("\r\n").strip()
    if not answer:
        raise UserError(f"No answer to {prompt.strip().rstrip(':')!r}.")
    return answer


def ask_secret(noun: str, prompt: str, *, confirm: bool = False, otherwise: str = "") -> str:
    """A password or passphrase; on a terminal typed twice when `confirm` (from a pipe, one line).

    Failures name the secret by `noun` ("password") and end with `otherwise`, which says where else
    it could have come from ("set VEIL_PASSWORD")."""
    hint = f"; {otherwise}" if otherwise else ""
    if not interactive():
        line = sys.stdin.readline()
        if not line.rstrip("\r\n"):
            raise UserError(f"No {noun} given (standard input ended){hint}.")
        return line.rstrip("\r\n")
    secret = getpass.getpass(prompt, stream=sys.stderr)
    if not secret:
        raise UserError(f"No {noun} given{hint}.")
    if confirm and getpass.getpass("Again, to confirm: ", stream=sys.stderr) != secret:
        raise UserError(f"The two entries of the {noun} differ; nothing was changed.")
    return secret


def ask_code(resume: str) -> str:
    """The six-digit code from an email. `resume` says how to finish later (with the code as an
    argument) when none is given now: the request that mailed it stays valid for a while."""
    try:
        code = ask_line("The six-digit code from the email: ")
    except UserError:
        raise UserError(f"No code given. Finish with `{resume}`.") from None
    return checked_code(code)


def checked_code(code: str) -> str:
    """A code as typed or passed on the command line, refused early when it cannot be one."""
    code = code.strip()
    if not _CODE.match(code):
        raise UserError("The code is the six digits from the email.")
    return code


def ask_yes(prompt: str) -> bool:
    return ask_line(prompt).lower() in ("y", "yes")
