"""Several `veil-client` processes on one profile at once (docs/adr/0020): they take turns on the
profile's lock, each starts from what the others saved, and none presents a refresh token another
already rotated, which the server would take for theft and answer by ending the device's session."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import ServerFactory
from tests.e2e.test_cli import CLIENT, Cli, assert_readable_failure, base_environment
from tests.support.server import LiveServer
from veil.client.cli.live import single_frames, websocket_url
from veil.client.sdk.http import VeilClient
from veil.client.sdk.keystore import ScryptParams

pytestmark = pytest.mark.slow

PARALLEL = 8
FAST_AUTH = {"VEIL_AUTH_RATE": "10000", "VEIL_AUTH_BURST": "10000"}
# Another process of the same profile that does nothing but rotate the session's tokens.
REFRESH_ELSEWHERE = """
import os, sys
from veil.client.sdk.http import VeilClient
from veil.client.sdk.keystore import ScryptParams
url, ca_file, keystore = sys.argv[1:4]
with VeilClient(url, verify=ca_file, keystore=keystore,
                passphrase=os.environ["VEIL_PASSPHRASE"], scrypt=ScryptParams(log2_n=10)) as client:
    client.refresh()
"""


def keystore_of(cli: Cli, profile: str) -> Path:
    return cli.home / profile / "keystore.veilks"


def run_at_once(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Start every command, then wait for all of them."""
    started = [
        subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        for argv in commands
    ]
    done = []
    try:
        for process in started:
            out, errors = process.communicate(timeout=120)
            done.append(subprocess.CompletedProcess(process.args, process.returncode, out, errors))
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return done


def test_eight_parallel_sends_share_one_session_which_only_a_reused_token_ends(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # A 2-second access token is due at once (the client renews 30 s ahead): every request of
    # every command refreshes, so the eight present the profile's refresh token again and again.
    cli = Cli(make_server(VEIL_ACCESS_TTL="2", **FAST_AUTH), tmp_path / "home")
    ada_email, ada_id = cli.sign_up("ada")
    _, bob_id = cli.sign_up("bob")
    cli.ok("ada", "send", bob_id, "before the crowd")  # the conversation exists before the race

    texts = [f"parallel {i}" for i in range(PARALLEL)]
    sends = run_at_once([cli.argv("ada", ("send", bob_id, text), server=True) for text in texts], cli.env)

    assert [done.returncode for done in sends] == [0] * PARALLEL, [done.stderr for done in sends]
    seqs = sorted(int(done.stdout.split()[0].lstrip("#")) for done in sends)
    assert seqs == list(range(seqs[0], seqs[0] + PARALLEL))  # one message each
    # Bob reads every one: no two commands encrypted under the same position of Ada's sender key.
    history = cli.ok("bob", "history", ada_id)
    for text in texts:
        assert f"{ada_id[:8]}: {text}" in history, history

    # The session lives on; only presenting a spent refresh token again ends it, and that is
    # what the failure says.
    keystore = keystore_of(cli, "ada")
    before = keystore.read_bytes()
    assert ada_email in cli.ok("ada", "whoami")  # refreshes: the token saved in `before` is spent
    keystore.write_bytes(before)  # a key store restored from a copy presents it again
    assert_readable_failure(
        cli.run("ada", "whoami"),
        "This device's session was ended (signed out elsewhere, or the server saw a reused refresh "
        "token): sign in again with `veil-client login`.",
    )


def test_a_long_lived_client_keeps_its_socket_and_sends_after_other_processes_refreshed(
    api: LiveServer, tmp_path: Path
) -> None:
    cli = Cli(api, tmp_path / "home")
    _, ada_id = cli.sign_up("ada")
    _, bob_id = cli.sign_up("bob")
    keystore = keystore_of(cli, "ada")
    # What `veil-client chat` holds for as long as it runs: the client, its state, its socket.
    with VeilClient(
        api.base_url,
        verify=api.ssl_context(),
        keystore=keystore,
        passphrase=cli.env["VEIL_PASSPHRASE"],
        scrypt=ScryptParams(log2_n=10),
    ) as chat:
        cid = chat.create_direct(bob_id).conversation_id
        with connect(
            websocket_url(api.base_url),
            ssl=api.ssl_context(),
            additional_headers={"Authorization": f"Bearer {chat.access_token()}"},
            proxy=None,
        ) as socket:
            refresh = [sys.executable, "-c", REFRESH_ELSEWHERE, api.base_url, str(api.ca_file), str(keystore)]
            for _ in range(3):
                assert subprocess.run(refresh, env=cli.env, capture_output=True, timeout=60).returncode == 0
            elsewhere = cli.ok("ada", "send", bob_id, "from another terminal")

            sent = chat.send_text(cid, "from the chat")
            chat.refresh()  # with the newest refresh token: the chat's own one was spent long ago

            assert int(elsewhere.split()[0].lstrip("#")) in announced(socket, sent.seq)
    # The session is still valid, and neither process's writes were lost: each own message's
    # plaintext (which only the key store remembers) is there, and Bob reads both, so they were
    # encrypted under distinct positions of Ada's sender key.
    mine = cli.ok("ada", "history", bob_id)
    assert "you: from another terminal" in mine and "you: from the chat" in mine, mine
    theirs = cli.ok("bob", "history", ada_id)
    assert f"{ada_id[:8]}: from another terminal" in theirs and f"{ada_id[:8]}: from the chat" in theirs


def announced(socket: ClientConnection, last_seq: int) -> set[int]:
    """The message seqs the socket announces up to `last_seq` (it must stay open meanwhile)."""
    seqs: set[int] = set()
    deadline = time.monotonic() + 20
    while last_seq not in seqs:
        frame = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        for single in single_frames(frame):  # the client's URL asks for `messages` frames
            if single.get("type") == "message":
                seqs.add(int(single["message"]["seq"]))
    return seqs


def test_parallel_address_book_changes_are_all_kept(tmp_path: Path) -> None:
    env = base_environment() | {"VEIL_CLIENT_HOME": str(tmp_path / "home")}
    friends = {f"friend-{i}": str(uuid.uuid4()) for i in range(PARALLEL)}
    adds = run_at_once(
        [[*CLIENT, "contacts", "add", name, user_id] for name, user_id in friends.items()], env
    )
    assert [done.returncode for done in adds] == [0] * PARALLEL, [done.stderr for done in adds]
    listed = subprocess.run([*CLIENT, "contacts"], env=env, capture_output=True, text=True, timeout=60)
    for name, user_id in friends.items():
        assert re.search(rf"{name}\s+{user_id}", listed.stdout), listed.stdout
