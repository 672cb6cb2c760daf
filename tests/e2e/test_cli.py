"""`veil-client` as people use it: a subprocess per command against a live server, secrets fed on
standard input, and `chat` driven line by line while its output is read live. Also `make demo`'s
script (`python -m veil.client.cli.demo`) against the test stack."""

from __future__ import annotations

import json
import os
import queue
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import ServerFactory
from tests.support import stackdir
from tests.support.server import LiveServer, free_port
from tests.support.users import PASSWORD, bearer, login, new_email
from veil.core.config import Settings
from veil.devstack import mailbox

pytestmark = pytest.mark.slow

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CLIENT = [sys.executable, "-m", "veil.client.cli.main"]
NEW_PASSWORD = "a brand new passphrase 9"


def base_environment() -> dict[str, str]:
    """The test's environment without anything that would point the client elsewhere."""
    ours = ("VEIL_", "S3_", "DATABASE_", "SMTP_")
    return {k: v for k, v in os.environ.items() if not k.startswith(ours)}


class Cli:
    """Runs `veil-client` with a private home and a cheap key store passphrase derivation."""

    def __init__(self, api: LiveServer, home: Path) -> None:
        self.api = api
        self.home = home
        self.env = base_environment() | {
            "VEIL_CLIENT_HOME": str(home),
            "VEIL_PASSPHRASE": "a passphrase for the tests' key stores",
            "VEIL_CLIENT_SCRYPT_LOG2N": "10",
            "PYTHONUNBUFFERED": "1",
        }

    def argv(self, profile: str, args: tuple[str, ...], *, server: bool) -> list[str]:
        where = ["--url", self.api.base_url, "--ca-file", str(self.api.ca_file)] if server else []
        return [*CLIENT, *where, "--profile", profile, *args]

    def run(
        self,
        profile: str,
        *args: str,
        stdin: str = "",
        server: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`env`: the whole environment instead of `self.env` (one without a secret variable, say)."""
        return subprocess.run(
            self.argv(profile, args, server=server),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env if env is None else env,
            timeout=60,
            start_new_session=True,  # no controlling terminal: prompts can only read the pipe
        )

    def ok(self, profile: str, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> str:
        done = self.run(profile, *args, stdin=stdin, env=env)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    def start(self, profile: str, *args: str) -> Session:
        process = subprocess.Popen(
            self.argv(profile, args, server=True),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=self.env,
            start_new_session=True,
        )
        return Session(process)

    def run_with_code(
        self,
        profile: str,
        *args: str,
        email: str,
        before: tuple[str, ...] = (),
        after: tuple[str, ...] = (),
        code: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command that mails `email` a code while it runs, answering as a person does: the
        lines of `before`, then (once the message arrived in the mail sink) the code and `after`.
        With `code`, that is typed instead of the mailed one (and the message need not carry one)."""
        count = len(mailbox.messages_to(stackdir.test_mail_dir(), email)) + 1
        process = subprocess.Popen(
            self.argv(profile, args, server=True),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env if env is None else env,
            start_new_session=True,
        )
        try:
            assert process.stdin is not None
            process.stdin.write("".join(f"{line}\n" for line in before))
            process.stdin.flush()
            try:
                message = mailbox.wait_for_mail(stackdir.test_mail_dir(), email, count=count, timeout=20)
            except TimeoutError:
                out, errors = process.communicate(timeout=60)
                raise AssertionError(f"nothing was mailed: {out} {errors}") from None
            typed = code if code is not None else mailbox.code_in(message[count - 1])
            assert typed is not None, "the message carries no code"
            out, errors = process.communicate("".join(f"{line}\n" for line in (typed, *after)), timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        return subprocess.CompletedProcess(process.args, process.returncode, out, errors)

    def sign_up(self, profile: str, *options: str) -> tuple[str, str]:
        """A new account signed in under `profile` in one run (password, then the emailed code):
        (email, user id)."""
        email = new_email()
        done = self.run_with_code(profile, "register", email, *options, email=email, before=(PASSWORD,))
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "code was emailed" in done.stderr
        match = re.search(rf"Your user id: ({UUID})", done.stdout)
        assert match, done.stdout
        return email, match.group(1)


class Session:
    """A running command whose standard output is read line by line in the background."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        threading.Thread(target=self._pump, args=(process.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, pattern: str, timeout: float = 20) -> str:
        """The next output line matching `pattern` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {self.seen}")

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        assert self.process.stdin is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()
        code = self.process.wait(timeout)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def cli(api: LiveServer, tmp_path: Path) -> Cli:
    return Cli(api, tmp_path / "home")


def assert_readable_failure(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 1 and one line that says what went wrong (notes printed before it may precede)."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    failures = [line for line in done.stderr.splitlines() if line.startswith("veil-client: ")]
    assert len(failures) == 1 and done.stderr.strip().endswith(failures[0]), done.stderr
    for fragment in fragments:
        assert fragment in failures[0], failures[0]


def test_register_login_whoami_logout(cli: Cli) -> None:
    email, user_id = cli.sign_up("ada")
    whoami = cli.ok("ada", "whoami")
    assert email in whoami and f"Your user id: {user_id}" in whoami
    assert "This device is primary" in whoami  # the account's first device holds its master key
    assert re.search(r"fingerprint( [0-9a-f]{4}){10}", whoami)
    profile = cli.home / "ada"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o700
    assert stat.S_IMODE((profile / "keystore.veilks").stat().st_mode) == 0o600
    # The server and CA were remembered: later commands need neither.
    assert email in cli.run("ada", "whoami", server=False).stdout
    # Nothing secret lands in the profile's settings.
    settings = (profile / "profile.json").read_text()
    assert PASSWORD not in settings and "token" not in settings

    # The password is asked first in every command that needs it, even when it turns out unneeded.
    assert "Already signed in" in cli.ok("ada", "login", email, stdin=f"{PASSWORD}\n")
    assert "Signed out" in cli.ok("ada", "logout")
    assert_readable_failure(cli.run("ada", "whoami"), "not signed in")
    login = cli.ok("ada", "login", email, stdin=f"{PASSWORD}\n")
    assert f"Your user id: {user_id}" in login
    # The key store kept the master key: signing in again, the device approves itself.
    assert "This device is primary" in login
    assert re.search(r"\(this device\): approved", cli.ok("ada", "devices"))


def test_two_people_chat_live_with_receipts(cli: Cli) -> None:
    ada_email, ada_id = cli.sign_up("ada")
    bob_email, bob_id = cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "contacts", "add", ada_email, ada_id)
    assert cli.ok("ada", "send", bob_email, "before", "the", "chat").startswith("#1 sent")

    ada, bob = cli.start("ada", "chat", bob_email), cli.start("bob", "chat", ada_email)
    try:
        ada.expect("Chat with")
        bob.expect(rf"#1 .* {re.escape(ada_email)}: before the chat")
        # #2 is Ada's key-log head (gossip after her first message here), which is not shown.
        ada.type("hello bob, live")
        bob.expect(rf"#3 .* {re.escape(ada_email)}: hello bob, live")
        ada.expect(rf"#3 delivered to {re.escape(bob_email)}")
        bob.type("hi ada")  # pressing enter marks what Bob saw as read
        ada.expect(rf"#3 read by {re.escape(bob_email)}")  # Bob marks before he sends
        ada.expect(rf"#4 .* {re.escape(bob_email)}: hi ada")
        ada.type("/quit")
        assert ada.finish() == (0, "")
        bob_code, bob_errors = bob.finish()  # the end of input leaves too
        assert (bob_code, bob_errors) == (0, "")
    finally:
        ada.kill()
        bob.kill()

    history = cli.ok("ada", "history", bob_email)
    assert "you: hello bob, live" in history and f"{bob_email}: hi ada" in history


def test_group_create_invite_accept_remove(cli: Cli) -> None:
    people = {name: cli.sign_up(name) for name in ("ada", "bob", "carol")}
    for name, (email, user_id) in people.items():
        if name != "ada":
            cli.ok("ada", "contacts", "add", email, user_id)
    bob_email, carol_email = people["bob"][0], people["carol"][0]
    created = cli.ok("ada", "group", "create", "club")
    group_id = re.search(UUID, created)
    assert group_id, created
    cli.ok("ada", "group", "invite", "club", bob_email, carol_email)
    listing = cli.ok("bob", "conversations")
    assert f"group accept {group_id.group(0)}" in listing
    for name in ("bob", "carol"):
        cli.ok(name, "group", "accept", group_id.group(0), "--name", "club")
    cli.ok("ada", "send", "club", "welcome both")
    cli.ok("carol", "send", "club", "glad to be here")
    assert "welcome both" in cli.ok("carol", "history", "club")

    assert "Removed" in cli.ok("ada", "group", "remove", "club", carol_email)
    cli.ok("ada", "send", "club", "only for bob now")  # goes under a new epoch's sender key
    bob_history = cli.ok("bob", "history", "club")
    assert "welcome both" in bob_history and "glad to be here" in bob_history
    assert "only for bob now" in bob_history
    assert_readable_failure(cli.run("carol", "history", "club"), "not a member")
    assert_readable_failure(cli.run("carol", "send", "club", "still here?"), "not a member")
    # Only admins may remove people.
    assert_readable_failure(
        cli.run("bob", "group", "remove", "club", people["ada"][1]), "Only the group's admins"
    )


def test_send_file_and_get_file_byte_exact(cli: Cli, tmp_path: Path) -> None:
    ada_email, ada_id = cli.sign_up("ada")
    bob_email, bob_id = cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "contacts", "add", ada_email, ada_id)
    original = os.urandom(300_000)
    source = tmp_path / "holiday photo.jpg"
    source.write_bytes(original)
    sent = cli.ok("ada", "send-file", bob_email, str(source))
    assert sent.startswith("#1 sent holiday photo.jpg (300000 bytes")

    assert "[file 'holiday photo.jpg', 300000 bytes" in cli.ok("bob", "history", ada_email)
    target = tmp_path / "received.jpg"
    cli.ok("bob", "get-file", ada_email, "#1", "--output", str(target))
    assert target.read_bytes() == original
    assert_readable_failure(
        cli.run("bob", "get-file", ada_email, "1", "--output", str(target)), "already exists"
    )
    assert_readable_failure(cli.run("bob", "get-file", ada_email, "7"), "no message #7")
    assert_readable_failure(
        cli.run("ada", "send-file", bob_email, str(tmp_path / "missing")), "is not a file"
    )


def test_export_writes_the_archive(cli: Cli, tmp_path: Path) -> None:
    email, _ = cli.sign_up("ada")
    output = tmp_path / "my-data.json"
    export = cli.run_with_code("ada", "export", "--output", str(output), email=email)
    assert export.returncode == 0, export.stderr
    assert "code was emailed" in export.stderr and "Traceback" not in export.stderr
    archive = json.loads(output.read_text())
    assert archive["format"] == "veil-export/1"
    assert archive["profile"]["email"] == email
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    # A wrong code is explained, not a traceback.
    assert_readable_failure(cli.run("ada", "export", "--output", str(tmp_path / "x.json"), stdin="000000\n"))


def test_delete_account(cli: Cli) -> None:
    email, _ = cli.sign_up("ada")
    wrong = cli.run("ada", "delete-account", "--yes", stdin="not the password\n")
    assert_readable_failure(wrong, "Wrong password")
    erase = cli.run_with_code("ada", "delete-account", "--yes", email=email, before=(PASSWORD,))
    assert erase.returncode == 0, erase.stderr
    assert not (cli.home / "ada" / "keystore.veilks").exists()
    assert_readable_failure(cli.run("ada", "login", email, stdin=f"{PASSWORD}\n"), "Wrong email or password")


def test_register_finished_later_with_activate(cli: Cli) -> None:
    email = new_email()
    # Standard input ends where the code was asked for: the account is not created, and the
    # message says how to finish.
    stopped = cli.run("ada", "register", email, stdin=f"{PASSWORD}\n")
    assert_readable_failure(stopped, f"veil-client activate {email} CODE")
    assert "code was emailed" in stopped.stderr
    assert_readable_failure(cli.run("ada", "login", email, stdin=f"{PASSWORD}\n"), "Wrong email or password")
    code = mailbox.wait_for_code(stackdir.test_mail_dir(), email)
    assert_readable_failure(cli.run("ada", "activate", email, "12345"), "six digits")
    wrong = "000000" if code != "000000" else "111111"
    assert_readable_failure(cli.run("ada", "activate", email, wrong), "not accepted")
    activated = cli.ok("ada", "activate", email, code)
    assert re.search(rf"Registered {re.escape(email)} \(user id {UUID}\)", activated)
    # A used code does not work twice; the code may also come on standard input.
    assert_readable_failure(cli.run("ada", "activate", email, stdin=f"{code}\n"), "not accepted")
    assert "Your user id:" in cli.ok("ada", "login", email, stdin=f"{PASSWORD}\n")


def test_register_does_not_say_whether_an_address_is_taken(cli: Cli) -> None:
    email, _ = cli.sign_up("ada")
    # Registering a taken address runs like any sign-up; only the code is refused (the owner is
    # mailed a notice, which carries no code).
    again = cli.run_with_code("eve", "register", email, email=email, before=(PASSWORD,), code="000000")
    assert "code was emailed" in again.stderr
    assert_readable_failure(again, "not accepted")


def test_register_with_an_invitation(make_server: ServerFactory, database_url: str, tmp_path: Path) -> None:
    api = make_server(VEIL_REGISTRATION="invite", VEIL_AUTH_RATE="10000", VEIL_AUTH_BURST="10000")
    cli = Cli(api, tmp_path / "home")
    made = subprocess.run(
        [sys.executable, "-m", "veil.cli", "invites", "create", "--uses", "1", "--expires", "1h"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    invite = made.stdout.strip()
    uninvited = cli.run("eve", "register", new_email(), stdin=f"{PASSWORD}\n")
    assert_readable_failure(uninvited, "refused the sign-up", "--invite CODE")
    assert_readable_failure(
        cli.run("eve", "register", new_email(), "--invite", "not-an-invite", stdin=f"{PASSWORD}\n"),
        "refused the sign-up",
    )
    email, user_id = cli.sign_up("ada", f"--invite={invite}")  # a code may start with "-"
    assert email in (whoami := cli.ok("ada", "whoami")) and f"Your user id: {user_id}" in whoami


def test_password_change_signs_out_the_other_devices(cli: Cli) -> None:
    email, _ = cli.sign_up("ada")
    cli.ok("laptop", "login", email, stdin=f"{PASSWORD}\n")
    wrong = cli.run("ada", "password", stdin=f"not the password\n{NEW_PASSWORD}\n")
    assert_readable_failure(wrong, "Wrong current password")
    assert email in cli.ok("laptop", "whoami")  # still signed in: nothing changed

    changed = cli.ok("ada", "password", stdin=f"{PASSWORD}\n{NEW_PASSWORD}\n")
    assert "other devices were signed out" in changed
    assert email in cli.ok("ada", "whoami")  # this device stays
    assert_readable_failure(cli.run("laptop", "whoami"), "session was ended")
    assert_readable_failure(cli.run("eve", "login", email, stdin=f"{PASSWORD}\n"), "Wrong email or password")
    cli.ok("laptop", "login", email, stdin=f"{NEW_PASSWORD}\n")


def test_reset_password_removes_every_device(cli: Cli) -> None:
    email, _ = cli.sign_up("ada")
    cli.ok("laptop", "login", email, stdin=f"{PASSWORD}\n")
    # Asked on a profile signed in to the account: afterwards that device, too, is gone.
    reset = cli.run_with_code("ada", "reset-password", email, email=email, before=(NEW_PASSWORD,))
    assert reset.returncode == 0, reset.stderr
    assert "Every device" in reset.stdout and f"veil-client login {email}" in reset.stderr
    assert_readable_failure(cli.run("ada", "whoami"), "not signed in")
    assert_readable_failure(cli.run("laptop", "whoami"), "session was ended")
    assert_readable_failure(cli.run("eve", "login", email, stdin=f"{PASSWORD}\n"), "Wrong email or password")
    login = cli.ok("ada", "login", email, stdin=f"{NEW_PASSWORD}\n")
    assert "(this device)" in cli.ok("ada", "devices") and "Your user id:" in login

    # A wrong code changes nothing; a bad one is refused before anything is sent.
    assert_readable_failure(
        cli.run("eve", "reset-password", email, "--code", "000000", stdin=f"{PASSWORD}\n"), "not accepted"
    )
    assert_readable_failure(cli.run("eve", "reset-password", email, "--code", "abc"), "six digits")
    assert email in cli.ok("ada", "whoami")
    # An unknown address gets the same note (no account oracle), then no code ever comes.
    unknown = cli.run("eve", "reset-password", new_email(), stdin=f"{NEW_PASSWORD}\n")
    assert "a six-digit code was emailed" in unknown.stderr
    assert_readable_failure(unknown, "No code given")


def test_block_unblock_and_the_block_list(cli: Cli) -> None:
    ada_email, ada_id = cli.sign_up("ada")
    bob_email, bob_id = cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "contacts", "add", ada_email, ada_id)
    assert "You have not blocked anyone" in cli.ok("ada", "blocks")

    assert f"Blocked {bob_email} ({bob_id})" in cli.ok("ada", "block", bob_email)
    assert cli.ok("ada", "blocks").startswith(f"{bob_email}\t{bob_id}\tsince ")
    # Bob cannot start a conversation with Ada (as if she did not exist), nor invite her.
    assert_readable_failure(cli.run("bob", "send", ada_email, "hello?"), "no user or conversation")
    cli.ok("bob", "group", "create", "club")
    assert_readable_failure(cli.run("bob", "group", "invite", "club", ada_email))
    assert "No conversations yet" in cli.ok("ada", "conversations")

    assert f"Unblocked {bob_email}" in cli.ok("ada", "unblock", bob_id)  # by user id as well
    assert "You have not blocked anyone" in cli.ok("ada", "blocks")
    assert cli.ok("bob", "send", ada_email, "hello again").startswith("#1 sent")
    assert "hello again" in cli.ok("ada", "history", bob_email)

    assert_readable_failure(cli.run("ada", "block", ada_id), "cannot block yourself")
    assert_readable_failure(cli.run("ada", "block", "stranger@example.org"), "not in your address book")


def test_failures_are_one_readable_line(cli: Cli, tmp_path: Path) -> None:
    email, _ = cli.sign_up("ada")
    assert_readable_failure(
        cli.run("eve", "login", email, stdin="not the password\n"), "Wrong email or password"
    )
    nowhere = [*CLIENT, "--url", f"https://localhost:{free_port()}", "--ca-file", str(cli.api.ca_file)]
    unreachable = subprocess.run(
        [*nowhere, "--profile", "eve", "login", email],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        env=cli.env,
        timeout=60,
    )
    assert_readable_failure(unreachable, "Cannot reach a Veil server")
    untrusted = subprocess.run(
        [*CLIENT, "--url", cli.api.base_url, "--profile", "eve", "login", email],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        env=cli.env | {"VEIL_CLIENT_HOME": str(tmp_path / "other-home")},
        timeout=60,
    )
    assert_readable_failure(untrusted, "TLS verification failed", "--ca-file")
    wrong_passphrase = subprocess.run(
        cli.argv("ada", ("whoami",), server=True),
        capture_output=True,
        text=True,
        env=cli.env | {"VEIL_PASSPHRASE": "not the passphrase"},
        timeout=60,
    )
    assert_readable_failure(wrong_passphrase, "Wrong passphrase")
    assert_readable_failure(cli.run("ada", "chat", "nobody@example.org"), "not in your address book")

    # The session ends elsewhere (revoked from another device): the next command says so.
    device = re.search(rf"This device: ({UUID})", cli.ok("ada", "whoami"))
    assert device
    with cli.api.client() as http:
        other = login(http, email)
        revoked = http.delete(f"/v1/auth/sessions/{device.group(1)}", headers=bearer(other))
        assert revoked.status_code == 204
    assert_readable_failure(cli.run("ada", "whoami"), "session was ended", "veil-client login")


def link_code_in(output: str) -> str:
    match = re.search(r"Link code: (VL1-[0-9A-Z-]+)", output)
    assert match, output
    return match.group(1)


def safety_number_in(output: str) -> str:
    """The 60 digits of the safety number `verify` printed (three rows of four groups of five)."""
    rows = [line.strip() for line in output.splitlines() if re.fullmatch(r" {4}(\d{5} ){3}\d{5}", line)]
    assert len(rows) == 3, output
    digits = "".join(rows).replace(" ", "")
    assert len(digits) == 60 and digits.isdigit()
    return digits


def test_a_second_device_waits_until_a_device_of_the_user_approves_it(cli: Cli) -> None:
    ada_email, ada_id = cli.sign_up("ada")
    bob_email, bob_id = cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "contacts", "add", ada_email, ada_id)
    cli.ok("ada", "send", bob_email, "before the laptop")

    # A password is not enough: the new login waits for approval, and says how to get it.
    login = cli.run("laptop", "login", ada_email, stdin=f"{PASSWORD}\n")
    assert login.returncode == 0, login.stderr
    assert "This device is pending" in login.stdout
    code = link_code_in(login.stdout)
    assert f"veil-client devices approve {code}" in login.stderr
    laptop = re.search(rf"This device: ({UUID})", login.stdout)
    assert laptop
    listing = cli.ok("laptop", "devices")
    assert "This device is pending" in listing and "(this device)" in listing
    assert re.search(rf"device {laptop.group(1)}: not approved by its owner", cli.ok("ada", "devices"))
    # Ada's client sends nothing to it, and says so.
    sent = cli.run("ada", "send", bob_email, "while the laptop waits")
    assert sent.returncode == 0, sent.stderr
    assert re.search(rf"^warning: .*{laptop.group(1)[:8]}.*", sent.stderr, re.MULTILINE), sent.stderr
    # Only a device holding the master key approves, and only a well-formed code.
    assert_readable_failure(cli.run("laptop", "devices", "approve", code), "master key")
    assert_readable_failure(cli.run("ada", "devices", "approve", "VL1-NOT-A-CODE"), "link code")

    approved = cli.ok("ada", "devices", "approve", code)
    assert f"Approved device {laptop.group(1)} (linked)" in approved
    started = time.monotonic()
    linked = cli.ok("laptop", "devices", "link", "--wait", "30")
    assert "This device is approved: it is linked" in linked
    assert time.monotonic() - started < 15  # it did not wait: the approval had arrived
    assert "Link code" not in linked
    assert re.search(r"\(this device\): approved", cli.ok("laptop", "devices"))
    assert re.search(rf"device {laptop.group(1)}: approved", cli.ok("ada", "devices"))

    # The linked device reads what is sent from now on.
    cli.ok("laptop", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "send", ada_email, "hello to both of your devices")
    assert "hello to both of your devices" in cli.ok("laptop", "history", bob_email)


def test_devices_link_gives_up_after_its_wait(cli: Cli) -> None:
    email, _ = cli.sign_up("ada")
    cli.ok("laptop", "login", email, stdin=f"{PASSWORD}\n")
    waited = cli.run("laptop", "devices", "link", "--wait", "1", "--no-qr")
    code = link_code_in(waited.stdout)
    assert "\u2580" not in waited.stdout and "\u2584" not in waited.stdout  # no QR drawn into a pipe
    assert f"veil-client devices approve {code}" in waited.stderr
    assert_readable_failure(waited, "not approved within 1 s")
    assert_readable_failure(cli.run("ada", "devices", "link", "--primary"), "--primary does not go with")


def test_verify_shows_the_same_safety_number_on_both_sides(cli: Cli) -> None:
    ada_email, ada_id = cli.sign_up("ada")
    bob_email, bob_id = cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "contacts", "add", ada_email, ada_id)

    declined = cli.ok("ada", "verify", bob_email, stdin="n\n")
    assert f"{bob_email} is not marked as verified" in declined
    assert "You verified" not in cli.run("ada", "devices", bob_email).stderr

    by_ada = cli.ok("ada", "verify", bob_email, "--yes")
    by_bob = cli.ok("bob", "verify", ada_id, "--yes")  # by user id as well
    assert safety_number_in(by_ada) == safety_number_in(by_bob)
    assert f"{bob_email} is verified" in by_ada and f"{ada_email} is verified" in by_bob
    assert f"You verified {bob_email}" in cli.run("ada", "devices", bob_email).stderr

    # A scanned QR code must carry this very number.
    number = safety_number_in(by_bob)
    wrong = ("1" if number[0] != "1" else "2") + number[1:]
    assert_readable_failure(
        cli.run("bob", "verify", ada_email, "--scan", f"VEIL-SN1:{wrong}"), "not verified"
    )
    assert_readable_failure(
        cli.run("bob", "verify", ada_email, "--scan", "hello"), "not a Veil safety number"
    )
    assert "matches" in cli.ok("bob", "verify", ada_email, "--scan", f"VEIL-SN1:{number}")
    assert_readable_failure(cli.run("ada", "verify", ada_id, "--yes"), "That is you")
    assert "No new master key" in cli.ok("ada", "accept-key", bob_email)


def test_identity_reset_changes_the_safety_number_and_holds_verified_contacts(cli: Cli) -> None:
    ada_email, ada_id = cli.sign_up("ada")
    bob_email, bob_id = cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "contacts", "add", ada_email, ada_id)
    before = safety_number_in(cli.ok("bob", "verify", ada_email, "--yes"))

    assert_readable_failure(cli.run("ada", "identity", "reset", stdin="not the password\n"), "Wrong password")
    reset = cli.run("ada", "identity", "reset", stdin=f"{PASSWORD}\n")
    assert reset.returncode == 0, reset.stderr
    assert "every other device" in reset.stderr.lower() and "new master key" in reset.stdout

    # Bob verified Ada: nothing goes to her new key until he accepts or verifies again.
    held = cli.run("bob", "send", ada_email, "are you still you?")
    assert_readable_failure(held, "new master key")
    assert_readable_failure(cli.run("bob", "verify", ada_email, "--yes"), "accept-key")
    accepted = cli.run("bob", "accept-key", ada_email)
    assert accepted.returncode == 0 and "Accepted" in accepted.stdout, accepted.stderr
    after = safety_number_in(cli.ok("bob", "verify", ada_email, "--yes"))
    assert after != before
    assert after == safety_number_in(cli.ok("ada", "verify", bob_email, "--yes"))
    cli.ok("bob", "send", ada_email, "welcome back")
    assert "welcome back" in cli.ok("ada", "history", bob_email)


def test_the_demo_runs_against_a_live_server(api: LiveServer, settings: Settings, database_url: str) -> None:
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    env = base_environment() | {
        "DATABASE_URL": database_url,
        "S3_ENDPOINT": settings.s3_endpoint,
        "S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "S3_BUCKET": settings.s3_bucket,
        "S3_REGION": settings.s3_region,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "veil.client.cli.demo", "--url", api.base_url, "--ca-file", str(api.ca_file)],
        capture_output=True,
        text=True,
        env=env | {"VEIL_DATA_DIR": str(settings.data_dir)},  # where its sign-up codes are mailed
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    out = done.stdout
    assert "Carol asks the server for the group: refused (404" in out
    assert "UnknownSenderKeyError" in out
    assert "byte for byte the same" in out
    assert "plaintext anywhere in the row: no" in out
    assert "file contents anywhere in the object: no" in out
    assert re.search(r"ciphertext\s+\d+ bytes: 0203", out)  # a version-2 group-message frame, not text
    assert "the laptop is pending" in out and "lists it as: not approved by its owner" in out
    assert "the laptop is now linked" in out and "the laptop reads it" in out
    numbers = re.findall(r"(?:Alice|Bob) +sees ((?:\d{5} ){11}\d{5})", out)
    assert len(numbers) == 2 and numbers[0] == numbers[1], out
    assert "each marks the other verified" in out
