"""`veil-client chat` on a terminal: a pseudo-terminal (pexpect) types into the chat screen while
another user's messages arrive, against a live server. The line-by-line mode through pipes is
`test_cli.py::test_two_people_chat_live_with_receipts`."""

from __future__ import annotations

import re
from pathlib import Path

import pexpect
import pytest

from tests.e2e.test_cli import CLIENT, Cli, safety_number_in
from tests.support.server import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(api: LiveServer, tmp_path: Path) -> Cli:
    return Cli(api, tmp_path / "home")


def open_chat(cli: Cli, profile: str, target: str) -> pexpect.spawn:
    argv = cli.argv(profile, ("chat", target), server=True)
    assert argv[: len(CLIENT)] == CLIENT
    return pexpect.spawn(
        argv[0],
        argv[1:],
        # A pseudo-terminal answers no cursor position request: prompt_toolkit need not wait for one.
        env=cli.env | {"TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"},
        encoding="utf-8",
        dimensions=(24, 120),
        timeout=20,
    )


def test_typing_is_kept_while_messages_and_receipts_arrive(cli: Cli, tmp_path: Path) -> None:
    ada_email, ada_id = cli.sign_up("ada")
    bob_email, bob_id = cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "contacts", "add", ada_email, ada_id)
    ada, bob = re.escape(ada_email), re.escape(bob_email)

    screen = open_chat(cli, "ada", bob_email)
    bobs_chat = cli.start("bob", "chat", ada_email)  # through pipes
    try:
        screen.expect("Chat with")
        screen.expect(">")  # the input line is drawn
        bobs_chat.expect("Chat with")
        screen.send("half a li")
        screen.expect("half a li")
        bobs_chat.type("are you there?")
        # The message is printed whole, above the input line, which is then drawn again with what
        # was typed so far (printed into a terminal's own line editing, it would not come back).
        screen.expect(rf"#\d+ \d\d:\d\d {bob}: are you there\?\r\n")
        screen.expect("half a li")
        screen.send("ne\r")
        screen.expect(r"#(\d+) \d\d:\d\d you: half a line\r\n")
        assert isinstance(screen.match, re.Match)
        seq = screen.match.group(1)
        bobs_chat.expect(rf"#{seq} .* {ada}: half a line")  # both halves, as one message

        # Receipts come above the input line too.
        screen.send("still typ")
        screen.expect("still typ")
        bobs_chat.type("")  # Bob presses enter: he read it
        screen.expect(rf"  #{seq} read by {bob}\r\n")
        screen.expect("still typ")
        screen.send("ing\r")
        screen.expect(r"you: still typing\r\n")
        bobs_chat.expect(rf"{ada}: still typing")
        bobs_chat.type("/quit")
        assert bobs_chat.finish() == (0, "")

        notes = tmp_path / "my notes.txt"
        notes.write_bytes(b"for bob")
        screen.send(f"/file '{notes}'\r")  # quoted, as a terminal pastes a dropped file
        screen.expect(r"#\d+ \d\d:\d\d you: \[file 'my notes.txt', 7 bytes\]\r\n")

        screen.send("/members\r")
        screen.expect(r"2 members:\r\n  you\r\n")
        screen.expect(rf"  {bob}\r\n")

        screen.send("/verify\r")
        screen.expect(rf"Safety number with {bob}:\r\n((    (\d{{5}} ){{3}}\d{{5}}\r\n){{3}})")
        assert isinstance(screen.match, re.Match)
        shown = screen.match.group(1).replace("\r\n", "\n")
        assert safety_number_in(shown) == safety_number_in(cli.ok("bob", "verify", ada_email, stdin="n\n"))

        screen.send("/quit\r")
        screen.expect(pexpect.EOF)
    finally:
        screen.close(force=True)
        bobs_chat.kill()
    assert screen.exitstatus == 0, screen.before
