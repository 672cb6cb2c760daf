"""`veil-client unlock [--minutes N]` and `veil-client lock`: keep the key store open for a while, as
ssh-agent keeps keys (docs/adr/0022).

`unlock` asks for the passphrase once (or takes `VEIL_PASSPHRASE`), checks that it opens the key
store, and starts the agent (`veil.client.cli.agent`) as a detached process holding the key it
derived. Until the agent ends, every command on the profile gets the key from it: no passphrase
asked, no Scrypt run. `lock` ends it now.
"""

from __future__ import annotations

import argparse
import base64
import os
import select
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import IO

from veil.client.cli import agent, agent_socket
from veil.client.cli.context import Context
from veil.client.cli.credentials import keystore_passphrase
from veil.client.cli.failures import UserError
from veil.client.cli.profile import Profile
from veil.client.sdk.keystore import KeystoreKey, open_keystore

DEFAULT_MINUTES = 15
MAX_MINUTES = 24 * 60
_START_SECONDS = 20.0  # the agent's start: a Python interpreter importing the client


def minutes(text: str) -> int:
    """An argparse type: a whole number of minutes, 1 to 24 hours."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_MINUTES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of minutes from 1 to {MAX_MINUTES}")
    return int(text)


def unlock(ctx: Context, args: argparse.Namespace) -> None:
    profile = ctx.profile
    if not agent_socket.supported():
        raise UserError("The unlock agent needs Linux (it checks who asks with SO_PEERCRED).")
    if not profile.keystore.exists():
        raise UserError("This profile has no key store yet: `register` or `login` first.")
    passphrase = keystore_passphrase(profile.directory, creating=False, account_password=None)
    _, key = open_keystore(profile.keystore, passphrase=passphrase)  # a wrong passphrase stops here
    agent_socket.request_lock(agent_socket.socket_path(profile.directory))  # one agent per profile
    start_agent(profile, key, seconds=args.minutes * 60)
    until = datetime.now(UTC).astimezone() + timedelta(minutes=args.minutes)
    print(
        f"Unlocked until {until:%H:%M} ({args.minutes} minutes): commands on this profile ask no passphrase."
    )
    print("`veil-client lock` locks it now.", file=sys.stderr)


def lock(ctx: Context, args: argparse.Namespace) -> None:
    if agent_socket.request_lock(agent_socket.socket_path(ctx.profile.directory)):
        print("Locked: the next command asks for the passphrase again.")
    else:
        print("Not unlocked (no agent was running for this profile).")


_AGENT_ENVIRONMENT = frozenset({"PATH", "PYTHONPATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE"})


def start_agent(profile: Profile, key: KeystoreKey, *, seconds: int) -> None:
    """Start the agent for `profile` holding `key`, and return once it answers on its socket."""
    os.chmod(profile.directory, 0o700)  # the socket's directory: only its owner may reach it
    # Only what starting Python needs reaches the agent (an allow-list: no secret variable, whatever
    # its name, rides along into a process that may live a day): it holds the derived key alone.
    environment = {k: v for k, v in os.environ.items() if k in _AGENT_ENVIRONMENT}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "veil.client.cli.agent",
            str(agent_socket.socket_path(profile.directory)),
            str(profile.keystore),
            str(seconds),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment,
        cwd="/",
        start_new_session=True,  # outlives this command and its terminal, like ssh-agent
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(base64.b64encode(key.encode()) + b"\n")
        process.stdin.close()
        answer = _first_line(process.stdout, _START_SECONDS)
    finally:
        process.stdout.close()
    if answer != agent.READY:
        if process.poll() is None:
            process.terminate()
        raise UserError("The unlock agent did not start; commands will keep asking for the passphrase.")
    # It runs on alone (it ends itself, or with `lock`): marked as done so that this process neither
    # waits for it nor warns at exit that it still runs.
    process.returncode = 0


def _first_line(stream: IO[bytes], seconds: float) -> bytes:
    ready, _, _ = select.select([stream], [], [], seconds)
    return stream.readline() if ready else b""
