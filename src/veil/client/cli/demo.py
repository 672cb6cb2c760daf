"""`make demo` (`python -m veil.client.cli.demo`): three people talk through a running Veil, then we look
at what the server holds.

The script signs up Alice, Bob and Carol (each a device with its own keys, in memory), has Alice and
Bob exchange direct messages with receipts, makes a group of the three, removes Carol (the epoch
rises and Alice's next message goes under a new sender key that only Bob receives: even the stored
envelope is useless to Carol), sends a file, signs Alice in on a second device (it waits until her
first device approves its link code, then reads the group's next message), has Alice and Bob
compare safety numbers, and finally prints the database row of one message and the attachment row
and stored object of the file: envelopes, ciphertext and metadata only.

Sign-up is as for anyone: each person's emailed six-digit code is read from the development mail
sink under `$VEIL_DATA_DIR/mail` (default `.data/mail`), so the demo needs the data directory of
the server it talks to. `--start-server` starts `veil run` when nothing answers at the URL, and
stops it (by its PID) at the end. The database and object store are found as
`server_view.Stores.locate` explains (`DATABASE_URL`, `S3_*`, or the development servers under
`VEIL_DATA_DIR`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from veil.client.cli.failures import explain
from veil.client.cli.server_view import Stores, StoresUnavailable
from veil.client.cli.trust_commands import show_qr
from veil.client.protocol.commit import roster_hash
from veil.client.protocol.errors import CryptoError
from veil.client.protocol.identity import format_safety_number, safety_number_qr
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import Conversation, GroupMessage, VeilError
from veil.devstack import mailbox

T = TypeVar("T")

_SERVER_START_SECONDS = 90.0
_MAIL_SECONDS = 20.0
NOTES = "\n".join(
    f"line {n}: the minutes of the book club, meeting {n // 40 + 1}" for n in range(2000)
).encode()


class DemoFailed(Exception):
    """Something the demo shows did not hold, or the system was not there."""


def say(text: str = "") -> None:
    print(text, flush=True)


def short(identifier: str) -> str:
    return identifier[:8] + "…"


def with_patience(action: Callable[[], T]) -> T:
    """Run an API call, waiting out the per-IP rate limit on sign-ups and logins (Retry-After)."""
    for _ in range(10):
        try:
            return action()
        except VeilError as error:
            if error.status != 429:
                raise
            time.sleep(error.retry_after or 1)
    return action()


# The running system --------------------------------------------------------------------------------


def data_dir() -> Path:
    return Path(os.environ.get("VEIL_DATA_DIR", ".data"))


def answers(url: str, tls: ssl.SSLContext | None) -> bool:
    try:
        return httpx.get(f"{url}/healthz", verify=tls or True, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_system(url: str, ca_file: Path | None, *, start: bool) -> Iterator[ssl.SSLContext]:
    """The TLS context to reach `url`; with `start`, `veil run` is started if nothing answers."""
    ca = ca_file or data_dir() / "tls" / "ca.pem"
    tls = ssl.create_default_context(cafile=str(ca)) if ca.is_file() else ssl.create_default_context()
    if answers(url, tls):
        yield tls
        return
    if not start:
        raise DemoFailed(
            f"nothing answers at {url}; start the system with `make run` (or pass --start-server)"
        )
    log_path = data_dir() / "demo-server.log"
    data_dir().mkdir(parents=True, exist_ok=True)
    say(f"Starting `veil run` (log: {log_path}) ...")
    with log_path.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "veil", "run"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + _SERVER_START_SECONDS
        while not (ca.is_file() and answers(url, ssl.create_default_context(cafile=str(ca)))):
            if process.poll() is not None or time.monotonic() > deadline:
                raise DemoFailed(f"`veil run` did not come up; see {log_path}")
            time.sleep(0.3)
        yield ssl.create_default_context(cafile=str(ca))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # what Ctrl-C does: stops PostgreSQL and S3 as well
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# The conversation ----------------------------------------------------------------------------------


class Person:
    def __init__(self, name: str, url: str, tls: ssl.SSLContext) -> None:
        self.name = name
        self.email = f"demo-{name.lower()}-{uuid.uuid4().hex[:8]}@example.org"
        self.password = f"demo {secrets.token_urlsafe(16)}"
        self.client = VeilClient(url, verify=tls)

    def sign_up(self, mail_dir: Path) -> None:
        """Register, verify with the code the sink received, and sign in (a new device)."""
        before = len(mailbox.messages_to(mail_dir, self.email))
        with_patience(lambda: self.client.register(self.email, self.password))
        try:
            code = mailbox.wait_for_code(mail_dir, self.email, count=before + 1, timeout=_MAIL_SECONDS)
        except TimeoutError:
            raise DemoFailed(
                f"no sign-up code for {self.email} arrived in {mail_dir}; the demo reads codes from the "
                "development mail sink, so set VEIL_DATA_DIR to the data directory of the server"
            ) from None
        with_patience(lambda: self.client.verify_registration(self.email, code))
        with_patience(lambda: self.client.login(self.email, self.password, device_name=f"demo {self.name}"))
        say(f"   {self.name:5}  {self.email}  user {short(self.client.user_id)}")
        say(f"          device fingerprint {self.client.crypto.fingerprint()}")

    def read(self, conversation_id: str, after_seq: int = 0) -> list[GroupMessage]:
        """Fetch, show and acknowledge (delivered, then read) what arrived."""
        messages = self.client.history(conversation_id, after_seq=after_seq)
        for message in messages:
            if message.sender_id != self.client.user_id:
                shown = message.text if message.content_type == "text" else f"[{message.content_type}]"
                say(f"   {self.name} reads #{message.seq}: {shown!r}")
        if messages:
            self.client.mark(conversation_id, "delivered", messages[-1].seq)
            self.client.mark(conversation_id, "read", messages[-1].seq)
        return messages

    def says(self, conversation_id: str, text: str) -> int:
        seq = self.client.send_text(conversation_id, text).seq
        say(f"   {self.name} sends #{seq}: {text!r}")
        return seq


def direct_conversation(alice: Person, bob: Person) -> tuple[str, int, str]:
    say("\n2. A direct conversation (pairwise X3DH set-up, then sender keys)")
    direct = alice.client.create_direct(bob.client.user_id).conversation_id
    text = "Lunch on Thursday? I found a place that does good dumplings."
    seq = alice.says(direct, text)
    if [m.text for m in bob.read(direct)] != [text]:
        raise DemoFailed("Bob did not read Alice's message")
    bob.says(direct, "Yes! 12:30?")
    alice.read(direct, after_seq=seq)
    say("   (both marked the messages delivered and read: receipts are metadata the server keeps)")
    return direct, seq, text


def group_with_removal(alice: Person, bob: Person, carol: Person) -> tuple[Conversation, int]:
    say("\n3. A group: Alice invites Bob and Carol, later removes Carol (keys rotate)")
    group = alice.client.create_group().conversation_id
    for member in (bob, carol):
        alice.client.invite(group, member.client.user_id)
        member.client.accept(group)
    say(f"   Bob and Carol joined; epoch {alice.client.conversation(group).epoch}")
    alice.says(group, "Welcome to the book club! First up: The Dispossessed.")
    bob.read(group)
    carol.read(group)
    carol.says(group, "Great choice, I am halfway through already.")
    alice.client.remove(group, carol.client.user_id)
    epoch = alice.client.conversation(group).epoch
    say(f"   Alice removes Carol: epoch {epoch}; the next message needs a new sender key")
    secret_seq = alice.says(group, "Surprise party for Carol on Friday, keep it quiet!")
    bob.read(group, after_seq=1)
    try:
        carol.client.history(group)
    except VeilError as error:
        say(f"   Carol asks the server for the group: refused ({error.status} {error.detail})")
    else:
        raise DemoFailed("the server still serves the group to Carol")
    return alice.client.conversation(group), secret_seq


def carol_cannot_open(
    carol: Person, stores: Stores, group: Conversation, seq: int, members: list[str]
) -> None:
    """Even with the stored envelope (a leak, a malicious server) and the new epoch's roster (whose
    hash the message's associated data carries), Carol has no key for the new epoch."""
    row = stores.message_row(group.conversation_id, seq)
    envelope = {
        "message_id": str(row["message_id"]),
        "conversation_id": str(row["conversation_id"]),
        "sender_id": str(row["sender_id"]),
        "sender_device_id": str(row["sender_device_id"]),
        "content_type": row["content_type"],
        "key_epoch": row["key_epoch"],
        "parent_id": None if row["parent_id"] is None else str(row["parent_id"]),
        "ciphertext": base64.b64encode(row["ciphertext"]).decode(),
        "nonce": base64.b64encode(row["nonce"]).decode(),
        "auth_tag": base64.b64encode(row["auth_tag"]).decode(),
    }
    try:
        carol.client.crypto.decrypt_group_message(envelope, roster_hash(members), now=time.time())
    except CryptoError as error:
        say(
            f"   Carol's device, handed the stored envelope of #{seq}: {type(error).__name__} (no key for it)"
        )
        return
    raise DemoFailed("Carol could decrypt a message sent after her removal")


def file_transfer(alice: Person, bob: Person, group: str) -> tuple[str, int]:
    say("\n4. A file: encrypted on Bob's machine, uploaded straight to the object store")
    sent = bob.client.send_file(group, io.BytesIO(NOTES), name="book-club-minutes.txt")
    reference = sent.reference
    say(f"   Bob sends #{sent.message.seq}: {reference.name} ({reference.plaintext_size} bytes)")
    message = next(m for m in alice.client.history(group) if m.seq == sent.message.seq)
    received = io.BytesIO()
    alice.client.download_file(message, received)
    if received.getvalue() != NOTES:
        raise DemoFailed("Alice's copy of the file differs")
    say("   Alice downloads it: digest checked, decrypted, byte for byte the same")
    return reference.attachment_id, sent.message.seq


def second_device(alice: Person, group: str, url: str, tls: ssl.SSLContext) -> None:
    """A new login is a device nobody trusts until one the user has approves its link code."""
    say("\n5. Alice signs in on a second device: it waits for her approval")
    laptop = VeilClient(url, verify=tls)
    try:
        with_patience(lambda: laptop.login(alice.email, alice.password, device_name="demo Alice's laptop"))
        code = laptop.link_code()
        say(f"   the laptop is {laptop.identity_role}; it shows its link code {code}")
        show_qr(code)  # on a terminal: what Alice's phone would scan
        listed = {d.device_id: d.status for d in alice.client.devices_of(alice.client.user_id)}
        say(f"   Alice's first device lists it as: {listed.get(laptop.device_id, 'missing')}")
        alice.client.approve_device(code)
        say("   Alice approves the code on her first device: it checks the code against the keys the")
        say("   server lists, certifies the laptop with her master key and sends it that key (encrypted)")
        if not laptop.poll_link():
            raise DemoFailed("the laptop was not linked after Alice approved it")
        say(f"   the laptop is now {laptop.identity_role}")
        text = "Next meeting at my place; I will bring the laptop."
        alice.says(group, text)  # sender keys go to the newly approved device as well
        read = [m.text for m in laptop.history(group) if m.text is not None]
        if text not in read:
            raise DemoFailed("Alice's laptop could not read the group's new message")
        say(f"   the laptop reads it: {text!r}")
    finally:
        laptop.close()


def safety_numbers(alice: Person, bob: Person) -> None:
    say("\n6. Alice and Bob compare safety numbers (from the master keys each device pinned)")
    seen_by_alice = alice.client.safety_number(bob.client.user_id)
    seen_by_bob = bob.client.safety_number(alice.client.user_id)
    for who, number in (("Alice", seen_by_alice), ("Bob", seen_by_bob)):
        say(f"   {who:5} sees {format_safety_number(number)}")
    if seen_by_alice != seen_by_bob:
        raise DemoFailed("Alice and Bob see different safety numbers")
    say("   equal on both sides: nobody swapped a key between them")
    alice.client.mark_verified(bob.client.user_id, scanned=safety_number_qr(seen_by_bob))
    bob.client.mark_verified(alice.client.user_id)
    if not (alice.client.is_verified(bob.client.user_id) and bob.client.is_verified(alice.client.user_id)):
        raise DemoFailed("the verification was not recorded")
    say("   Alice scans Bob's QR code, Bob confirms by eye: each marks the other verified")


# What the server holds -----------------------------------------------------------------------------


def shown_value(value: Any, width: int = 48) -> str:
    if isinstance(value, bytes):
        head = value[:24].hex()
        return f"{len(value)} bytes: {head}{'…' if len(value) > 24 else ''}"
    text = str(value)
    return text if len(text) <= width else text[:width] + "…"


def print_row(title: str, row: dict[str, Any]) -> None:
    say(f"   {title}")
    for column, value in row.items():
        say(f"     {column:17} {shown_value(value)}")


def server_holdings(stores: Stores, direct: str, seq: int, plaintext: str, attachment_id: str) -> None:
    say("\n7. What the server holds")
    row = stores.message_row(direct, seq)
    print_row(f"messages row of Alice's first message (#{seq}, direct conversation):", row)
    stored = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row.values())
    say(f"     plaintext anywhere in the row: {'YES' if plaintext.encode() in stored else 'no'}")
    attachment = stores.attachment_row(attachment_id)
    print_row("attachments row of the file:", attachment)
    blob = stores.read_object(str(attachment["object_key"]))
    say(f"   object {short(str(attachment['object_key']))} in bucket {stores.s3_bucket}:")
    say(
        f"     size {len(blob)} bytes (the file has {len(NOTES)}), sha256 matches row: "
        f"{'yes' if hashlib.sha256(blob).digest() == attachment['sha256'] else 'NO'}"
    )
    say(f"     first bytes {blob[:32].hex()}")
    say(f"     file contents anywhere in the object: {'YES' if NOTES[:64] in blob else 'no'}")
    if plaintext.encode() in stored or NOTES[:64] in blob:
        raise DemoFailed("plaintext reached the server")
    say("   No key, no name, no text: the row holds the envelope, the store holds ciphertext.")


def run(url: str, tls: ssl.SSLContext) -> None:
    started = time.monotonic()
    stores = Stores.locate()
    say(f"Veil demo against {url}\n\n1. Three people sign up (a code is emailed to each, read here from")
    say(f"   the development mail sink in {data_dir() / 'mail'}); each login is a device with its own keys")
    people = [Person(name, url, tls) for name in ("Alice", "Bob", "Carol")]
    try:
        for person in people:
            person.sign_up(data_dir() / "mail")
        alice, bob, carol = people
        direct, seq, text = direct_conversation(alice, bob)
        group, secret_seq = group_with_removal(alice, bob, carol)
        members = [alice.client.user_id, bob.client.user_id]
        carol_cannot_open(carol, stores, group, secret_seq, members)
        attachment_id, _ = file_transfer(alice, bob, group.conversation_id)
        second_device(alice, group.conversation_id, url, tls)
        safety_numbers(alice, bob)
        server_holdings(stores, direct, seq, text, attachment_id)
    finally:
        for person in people:
            person.client.close()
    say(f"\nDone in {time.monotonic() - started:.1f} s.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m veil.client.cli.demo", description=__doc__.split("\n\n")[0]
    )
    default_url = os.environ.get("VEIL_URL") or f"https://localhost:{os.environ.get('VEIL_PORT', '8443')}"
    parser.add_argument("--url", default=default_url, help="the Veil server (default: %(default)s)")
    parser.add_argument("--ca-file", type=Path, help="CA to trust (default: $VEIL_DATA_DIR/tls/ca.pem)")
    parser.add_argument("--start-server", action="store_true", help="run `veil run` if nothing answers")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    try:
        with running_system(url, args.ca_file, start=args.start_server) as tls:
            run(url, tls)
    except (DemoFailed, StoresUnavailable) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        print(f"demo: {explain(error, url=url)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
