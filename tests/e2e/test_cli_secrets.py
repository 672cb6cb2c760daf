"""Where `veil-client` takes its secrets from, in one order for every command (docs/adr/0022): the
password first (--password-stdin, VEIL_PASSWORD, or asked), then the key store passphrase (the
unlock agent, VEIL_PASSPHRASE, or asked); and `unlock`/`lock`, which keep the key store open."""

from __future__ import annotations

import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import CLIENT, UUID, Cli, assert_readable_failure
from tests.support import stackdir
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, new_email
from veil.devstack import mailbox

pytestmark = pytest.mark.slow

PASSPHRASE = "the key store's own passphrase"


@pytest.fixture
def cli(api: LiveServer, tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(api, tmp_path / "home")
    yield cli
    for profile in cli.home.glob("*/agent.sock"):  # no agent outlives its test
        cli.run(profile.parent.name, "lock", server=False)


def without_secrets(cli: Cli, **extra: str) -> dict[str, str]:
    """The tests' environment with neither secret variable, plus `extra`."""
    return {k: v for k, v in cli.env.items() if k not in ("VEIL_PASSPHRASE", "VEIL_PASSWORD")} | extra


def user_id_in(output: str) -> str:
    match = re.search(rf"Your user id: ({UUID})", output)
    assert match, output
    return match.group(1)


def test_register_asks_the_password_then_the_passphrase_and_never_takes_one_for_the_other(cli: Cli) -> None:
    email = new_email()
    mails_before = len(mailbox.messages_to(stackdir.test_mail_dir(), email))
    # The README-script trap: the same line twice (as if confirming) made the passphrase the password.
    same_twice = cli.run(
        "ada", "register", email, stdin=f"{PASSWORD}\n{PASSWORD}\n", env=without_secrets(cli)
    )
    assert_readable_failure(same_twice, "must differ from the account password", "VEIL_PASSPHRASE")
    from_variables = cli.run(
        "ada", "register", email, env=without_secrets(cli, VEIL_PASSWORD=PASSWORD, VEIL_PASSPHRASE=PASSWORD)
    )
    assert_readable_failure(from_variables, "must differ from the account password", "VEIL_PASSPHRASE")
    assert not (cli.home / "ada" / "keystore.veilks").exists()
    assert len(mailbox.messages_to(stackdir.test_mail_dir(), email)) == mails_before  # nothing was sent

    done = cli.run_with_code(
        "ada", "register", email, email=email, before=(PASSWORD, PASSPHRASE), env=without_secrets(cli)
    )
    assert done.returncode == 0, done.stderr
    user_id = user_id_in(done.stdout)
    # The second line was the passphrase: it, and only it, opens the key store.
    assert user_id in cli.ok("ada", "whoami", env=without_secrets(cli, VEIL_PASSPHRASE=PASSPHRASE))
    assert_readable_failure(
        cli.run("ada", "whoami", env=without_secrets(cli, VEIL_PASSPHRASE=PASSWORD)), "Wrong passphrase"
    )


def test_login_takes_the_password_first_from_each_source(cli: Cli) -> None:
    email, user_id = cli.sign_up("ada")
    # --password-stdin: the first line is the password, the next the new key store's passphrase.
    piped = cli.ok(
        "laptop",
        "login",
        "--password-stdin",
        email,
        stdin=f"{PASSWORD}\n{PASSPHRASE}\n",
        env=without_secrets(cli),
    )
    assert user_id_in(piped) == user_id
    assert user_id in cli.ok("laptop", "whoami", env=without_secrets(cli, VEIL_PASSPHRASE=PASSPHRASE))
    # VEIL_PASSWORD: standard input then holds the passphrase only.
    from_variable = cli.ok(
        "tablet", "login", email, stdin=f"{PASSPHRASE}\n", env=without_secrets(cli, VEIL_PASSWORD=PASSWORD)
    )
    assert user_id_in(from_variable) == user_id
    # The order is the same as register's: the passphrase first is the wrong password.
    assert_readable_failure(
        cli.run("phone", "login", email, stdin=f"{PASSPHRASE}\n{PASSWORD}\n", env=without_secrets(cli)),
        "Wrong email or password",
    )
    # --password-stdin reads the first line even where the variable is set.
    assert_readable_failure(
        cli.run(
            "phone",
            "login",
            "--password-stdin",
            email,
            stdin="not the password\n",
            env=cli.env | {"VEIL_PASSWORD": PASSWORD},
        ),
        "Wrong email or password",
    )


def test_unlock_keeps_the_key_store_open_until_lock(cli: Cli) -> None:
    _, ada_id = cli.sign_up("ada")
    _, bob_id = cli.sign_up("bob")
    no_secrets = without_secrets(cli)

    assert_readable_failure(
        cli.run("ada", "unlock", stdin="not the passphrase\n", env=no_secrets), "Wrong passphrase"
    )
    assert not (cli.home / "ada" / "agent.sock").exists()
    unlocked = cli.ok(
        "ada", "unlock", "--minutes", "1", stdin=f"{cli.env['VEIL_PASSPHRASE']}\n", env=no_secrets
    )
    assert "Unlocked until" in unlocked
    socket = cli.home / "ada" / "agent.sock"
    assert (
        stat.S_IMODE(socket.stat().st_mode) == 0o600 and stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
    )

    # No passphrase anywhere, standard input closed: the agent's key opens the key store.
    assert cli.ok("ada", "send", bob_id, "sent while unlocked", env=no_secrets).startswith("#1 sent")
    assert "sent while unlocked" in cli.ok("ada", "history", bob_id, env=no_secrets)
    assert "sent while unlocked" in cli.ok("bob", "history", ada_id)  # and it was sent for real

    assert "Locked" in cli.ok("ada", "lock")
    assert not socket.exists()
    assert_readable_failure(
        cli.run("ada", "send", bob_id, "sent after lock", env=no_secrets),
        "No key store passphrase given",
        "VEIL_PASSPHRASE",
        "veil-client unlock",
    )
    assert "Not unlocked" in cli.ok("ada", "lock")
    too_long = cli.run("ada", "unlock", "--minutes", "1441")  # more than a day: a usage error
    assert too_long.returncode == 2 and "from 1 to 1440" in too_long.stderr


def test_the_help_names_every_source_in_order() -> None:
    shown = subprocess.run([*CLIENT, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    sources = ["--password-stdin", "VEIL_PASSWORD", "veil-client unlock", "VEIL_PASSPHRASE"]
    assert all(source in shown for source in sources)
    secrets = shown[shown.index("secrets,") :]
    assert [secrets.index(source) for source in sources] == sorted(
        secrets.index(source) for source in sources
    )
