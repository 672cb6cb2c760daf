"""Reading the development mail sink: one `.eml` file per message under `<data_dir>/mail`.

Tests, benchmarks, `make demo` and `veil-client` (against a development server) read emailed
sign-up and confirmation codes from here; there is no switch that turns verification off.
`python -m veil.devstack.mailbox EMAIL` prints the newest code for an address (README walk-through).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import re
import time
from email.message import EmailMessage
from pathlib import Path

_CODE = re.compile(r"\b(\d{6})\b")


def messages_to(directory: Path, address: str) -> list[EmailMessage]:
    """Every message the sink holds for `address`, oldest first."""
    found = []
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if address.lower() in str(message["To"]).lower():
            found.append(message)
    return found


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    content: str = part.get_content()
    return content


def wait_for_mail(
    directory: Path, address: str, *, count: int = 1, timeout: float = 10
) -> list[EmailMessage]:
    """Wait until at least `count` messages for `address` arrived; all of them, oldest first.
    TimeoutError if they did not."""
    deadline = time.monotonic() + timeout
    while True:
        found = messages_to(directory, address)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"expected {count} messages to {address} in {directory}, got {len(found)}")
        time.sleep(0.05)


def code_in(message: EmailMessage) -> str | None:
    """The six-digit code a message carries, if any."""
    match = _CODE.search(body_of(message))
    return match.group(1) if match else None


def wait_for_code(directory: Path, address: str, *, count: int = 1, timeout: float = 10) -> str:
    """The six-digit code in the `count`-th message to `address` (waiting for it)."""
    message = wait_for_mail(directory, address, count=count, timeout=timeout)[count - 1]
    code = code_in(message)
    if code is None:
        raise LookupError(f"message {count} to {address} carries no code")
    return code


def main(argv: list[str] | None = None) -> None:
    """`python -m veil.devstack.mailbox EMAIL`: print the newest code mailed to EMAIL."""
    parser = argparse.ArgumentParser(prog="python -m veil.devstack.mailbox", description=main.__doc__)
    parser.add_argument("email")
    parser.add_argument("--dir", type=Path, default=None, help="default: $VEIL_DATA_DIR/mail or .data/mail")
    args = parser.parse_args(argv)
    directory = args.dir or Path(os.environ.get("VEIL_DATA_DIR", ".data")) / "mail"
    codes = [code for code in map(code_in, messages_to(directory, args.email)) if code]
    if not codes:
        raise SystemExit(f"no code for {args.email} in {directory}")
    print(codes[-1])


if __name__ == "__main__":
    main()
