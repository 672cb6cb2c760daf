"""`veil-client chat`: one conversation, live, in the terminal.

What the person sees: the recent history, then every new message as it arrives, each line starting
with its number (`#7`), and under their own messages the other side's marks (`#7 delivered to bob`,
`#7 read by bob`). What they type is sent when they press enter; `/file PATH` sends a file,
`/members` lists who is in the conversation, `/verify` shows their safety numbers, and `/quit` (or
the end of input, Ctrl-D) leaves. On a terminal the input line stays at the bottom and keeps what is
being typed while messages arrive (see `chat_screen`); through pipes it reads and prints lines.

Receipts follow what the person could actually see: a message is marked `delivered` once it is
printed, and `read` once they press enter (or send) after it was printed.

The conversation runs in one thread, which owns the `VeilClient` and the socket; typed lines reach
it through a queue. New messages are fetched with `history(after_seq=...)` whenever the socket
announces one, and once a second while the socket is down.
"""

from __future__ import annotations

import shlex
import sys
import time
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from veil.client.cli.chat_screen import QUIT, TypedLines, converse_on_terminal, piped_lines
from veil.client.cli.failures import explain
from veil.client.cli.live import LiveFeed
from veil.client.cli.profile import Profile
from veil.client.cli.roster import member_lines, safety_number_lines
from veil.client.protocol.attachments import FileReference
from veil.client.protocol.errors import CryptoError
from veil.client.sdk.failure_messages import failure_sentence
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import Conversation, GroupMessage, NotAllowedError, TrustError, VeilError
from veil.client.sdk.object_store import TransferError

_TICK_SECONDS = 0.1
_POLL_SECONDS = 1.0
# One-time prekeys a device keeps on the server (topped up when the server says `prekeys_low`).
_PREKEY_TARGET = 100
_HELP = (
    "Enter sends what you typed. /file PATH sends a file, /members lists who is in the conversation, "
    "/verify shows their safety numbers, /quit (or Ctrl-D) leaves."
)


def clock_time(created_at: str) -> str:
    """A server timestamp (RFC 3339, UTC) as local HH:MM."""
    try:
        return datetime.fromisoformat(created_at.replace("Z", "+00:00")).astimezone().strftime("%H:%M")
    except ValueError:
        return "--:--"


def describe(message: GroupMessage, profile: Profile) -> str:
    """One printable line for a message (without its number)."""
    sender = profile.name_of(message.sender_id)
    head = f"{clock_time(message.created_at)} {sender}:"
    if message.plaintext is None:
        return f"{head} [{unread_sentence(message, profile)}]"
    if message.content_type == "text":
        return f"{head} {printable(message.text or '')}"
    if message.content_type == "file":
        try:
            reference = FileReference.decode(message.plaintext)
        except CryptoError:
            return f"{head} [a file whose description is malformed]"
        return f"{head} [file {reference.name!r}, {reference.plaintext_size} bytes: get-file #{message.seq}]"
    return f"{head} [{message.content_type} message]"


def unread_sentence(message: GroupMessage, profile: Profile) -> str:
    """Why `message` cannot be read, naming its sender as the address book does."""
    sender = profile.name_of(message.sender_id)
    return failure_sentence(
        message.failure or "unreadable", "your other device" if sender == "you" else sender
    )


def printable(text: str) -> str:
    """`text` safe for a terminal: a sender must not be able to move the cursor, recolour or retitle
    the window with escape sequences. Line breaks stay, indented under the message."""
    lines = text.split("\n")
    cleaned = [
        "".join(c if unicodedata.category(c)[0] != "C" else f"\\x{ord(c):02x}" for c in ln) for ln in lines
    ]
    return "\n    ".join(cleaned)


class Chat:
    def __init__(
        self,
        client: VeilClient,
        profile: Profile,
        conversation: Conversation,
        feed: LiveFeed,
        *,
        url: str,
        out: TextIO | None = None,
    ) -> None:
        self._client = client
        self._profile = profile
        self._conversation = conversation
        self._cid = conversation.conversation_id
        self._feed = feed
        self._url = url
        self._out = out  # None: whatever `sys.stdout` is when printing (the terminal screen patches it)
        self._last_seen = 0  # highest seq printed
        self._last_from_others = 0  # highest seq printed that someone else sent
        self._marked = {"delivered": 0, "read": 0}
        self._own_seqs: list[int] = []
        # Own messages printed when sent, before the messages numbered between them were fetched.
        self._printed_ahead: set[int] = set()
        self._reported: dict[tuple[str, str], int] = {}  # (user, kind) -> up_to_seq already shown
        self._next_poll = 0.0
        self._offline = False

    def run(self, title: str, lines: TypedLines, *, recent: int) -> None:
        self._say(f"Chat with {title}. Type and press enter to send; /help shows the commands; /quit leaves.")
        self._show_new(after=max(0, self._conversation.last_seq - recent))
        if not self._feed.connect():
            self._say("(live connection unavailable; checking for new messages every second)")
        while True:
            for line in lines.pending():
                if line is None or line.strip() == QUIT:
                    return
                self._on_line(line)
            try:
                self._feed.connect()
                for frame in self._feed.receive(_TICK_SECONDS):
                    self._on_frame(frame)
                if not self._feed.up:
                    self._poll()
            except httpx.TransportError:
                # The server is unreachable (restarting, the network is gone): keep the chat and retry.
                self._set_offline(True)
                time.sleep(_POLL_SECONDS)
            else:
                self._set_offline(False)
            # Shown as they happen rather than when the chat ends (a device nobody approved, say).
            for warning in self._client.take_warnings():
                self._say(f"warning: {warning}")

    def _set_offline(self, offline: bool) -> None:
        if offline != self._offline:
            self._offline = offline
            self._say("(cannot reach the server; retrying)" if offline else "(connected again)")

    # Typing --------------------------------------------------------------------------------------

    def _on_line(self, line: str) -> None:
        """Enter means "I have read what is on screen"; a non-empty line is also sent (or, if it
        is a command, done)."""
        text = line.strip()
        command, _, argument = text.partition(" ")
        sending = not text.startswith("/") or command == "/file"
        try:
            self._mark("read", self._last_from_others)
            if command == "/file":
                self._send_file(argument.strip())
            elif command == "/members":
                self._show_members()
            elif command == "/verify":
                self._show_safety_numbers()
            elif text.startswith("/"):
                self._say(f"{'' if command == '/help' else f'Unknown command {command}. '}{_HELP}")
            elif text:
                self._own(self._client.send_text(self._cid, line).seq, printable(line))
        except (
            VeilError,
            TrustError,
            NotAllowedError,
            OSError,
            TransferError,
            httpx.TransportError,
        ) as error:
            if isinstance(error, VeilError) and error.status == 401:
                raise
            # One failed send (a missing file, a rate limit, a changed key) does not end the conversation.
            self._say(f"! {'not sent: ' if sending else ''}{explain(error, url=self._url)}")

    def _send_file(self, argument: str) -> None:
        if not argument:
            self._say("Which file? /file PATH (Tab completes the path).")
            return
        sent = self._client.send_file(self._cid, Path(_one_path(argument)).expanduser())
        self._own(sent.message.seq, f"[file {sent.reference.name!r}, {sent.reference.plaintext_size} bytes]")

    def _show_members(self) -> None:
        for line in member_lines(self._client, self._profile, self._client.conversation(self._cid)):
            self._say(line)

    def _show_safety_numbers(self) -> None:
        for line in safety_number_lines(self._client, self._profile, self._client.conversation(self._cid)):
            self._say(line)

    def _own(self, seq: int, shown: str) -> None:
        self._own_seqs.append(seq)
        self._say(f"#{seq} {clock_time(datetime.now().astimezone().isoformat())} you: {shown}")
        # Our own message arrives over the socket too; it needs no fetch unless others came first.
        if seq == self._last_seen + 1:
            self._last_seen = seq
            self._feed.ack(self._cid, seq)
        else:
            self._printed_ahead.add(seq)

    # Frames --------------------------------------------------------------------------------------

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            message = frame.get("message") or {}
            if str(message.get("conversation_id")) == self._cid:
                seq = int(message.get("seq", 0))
                if seq > self._last_seen:
                    self._show_new(after=self._last_seen)
                else:
                    self._feed.ack(self._cid, seq)
        elif kind == "receipt" and frame.get("conversation_id") == self._cid:
            self._on_receipt(
                str(frame.get("user_id")), str(frame.get("receipt")), int(frame.get("up_to_seq", 0))
            )
        elif kind == "prekeys_low":
            # Strangers (or friends) are taking this device's one-time prekeys: upload more before
            # new sessions have to fall back to the signed prekey alone.
            self._client.publish_more_prekeys_if_low(_PREKEY_TARGET, target=_PREKEY_TARGET)
        elif kind == "device_pending":
            device = str(frame.get("device_id", ""))
            self._say(
                f"* a new device of yours ({device[:8]}) waits for approval: if it is yours, run "
                "`veil-client devices approve CODE` with the code it shows; if not, change your password"
            )
        elif kind == "identity_changed":
            who = self._profile.name_of(str(frame.get("user_id")))
            self._say(f"* {who}'s master key changed: compare safety numbers (`veil-client verify {who}`)")
        elif kind == "membership" and frame.get("conversation_id") == self._cid:
            who = self._profile.name_of(str(frame.get("user_id")))
            change = _MEMBERSHIP.get(str(frame.get("kind")), str(frame.get("kind")))
            self._say(f"* {who} {change.replace('was ', 'were ') if who == 'you' else change}")

    def _on_receipt(self, user_id: str, kind: str, up_to_seq: int) -> None:
        if user_id == self._client.user_id or kind not in ("delivered", "read"):
            return
        before = self._reported.get((user_id, kind), 0)
        newly = [seq for seq in self._own_seqs if before < seq <= up_to_seq]
        if up_to_seq > before:
            self._reported[(user_id, kind)] = up_to_seq
        if newly:
            numbers = ", ".join(f"#{seq}" for seq in newly)
            preposition = "to" if kind == "delivered" else "by"
            self._say(f"  {numbers} {kind} {preposition} {self._profile.name_of(user_id)}")

    # Fetching ------------------------------------------------------------------------------------

    def _poll(self) -> None:
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + _POLL_SECONDS
            self._show_new(after=self._last_seen)

    def _show_new(self, *, after: int) -> None:
        for message in self._client.history(self._cid, after_seq=after):
            if message.seq <= self._last_seen:
                continue
            self._last_seen = message.seq
            if message.seq in self._printed_ahead:
                self._printed_ahead.discard(message.seq)
                continue
            self._say(f"#{message.seq} {describe(message, self._profile)}")
            if message.sender_id == self._client.user_id:
                self._own_seqs.append(message.seq)
            else:
                self._last_from_others = message.seq
        self._mark("delivered", self._last_from_others)
        if self._last_seen:
            self._feed.ack(self._cid, self._last_seen)

    def _mark(self, kind: str, up_to_seq: int) -> None:
        if up_to_seq > self._marked[kind]:
            self._client.mark(self._cid, kind, up_to_seq)
            self._marked[kind] = up_to_seq

    def _say(self, line: str) -> None:
        print(line, file=self._out or sys.stdout, flush=True)


def _one_path(argument: str) -> str:
    """The path after `/file`: quoted or backslash-escaped as a shell would (what a terminal pastes
    for a dropped file), or else taken as typed, spaces and all."""
    try:
        words = shlex.split(argument)
    except ValueError:  # an unbalanced quote: not shell syntax
        return argument
    return words[0] if len(words) == 1 else argument


_MEMBERSHIP = {
    "created": "created the conversation",
    "invited": "was invited",
    "joined": "joined (keys rotate)",
    "declined": "declined the invitation",
    "left": "left (keys rotate)",
    "removed": "was removed (keys rotate)",
}


def run_chat(
    client: VeilClient,
    profile: Profile,
    conversation: Conversation,
    feed: LiveFeed,
    *,
    title: str,
    url: str,
    recent: int,
) -> None:
    """Talk in `conversation` until the person leaves: on the terminal screen when standard input
    and output are a terminal, else line by line through the pipes."""
    chat = Chat(client, profile, conversation, feed, url=url)

    def converse(lines: TypedLines) -> None:
        try:
            chat.run(title, lines, recent=recent)
        finally:
            feed.close()

    try:
        if sys.stdin.isatty() and sys.stdout.isatty():
            converse_on_terminal(converse, hint=f" {title}  |  /file PATH  /members  /verify  /help  /quit")
        else:
            converse(piped_lines(sys.stdin))
    except KeyboardInterrupt:
        pass
