"""The reference client against a server that lies about its key-transparency log (issue 16).

Every key the client uses must be proven by the log; a server that shows someone a forked log (two
heads of one size, or a history that does not extend the real one) is caught through the heads
members gossip inside their end-to-end-encrypted messages, and by the consistency check of a client
that saw a real head before. The lies are told by `tests/support/forked_log.py` through a
`LyingServer`; everyone else talks to the real server.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.e2e.test_cli import Cli
from tests.e2e.test_client_trust import as_device, devices_path, form_group, with_items
from tests.e2e.test_transparency import transparency_cli
from tests.support.clients import FAST, Clients
from tests.support.forked_log import Fork, ForkedLog, remove_entries_of, rewrite_entries_of
from tests.support.lying_server import LyingServer
from tests.support.server import LiveServer
from tests.support.users import PASSWORD
from veil.client.protocol.transparency import SPLIT_VIEW, SplitViewError, TransparencyError, user_hash
from veil.client.sdk.http import VeilClient
from veil.core.config import Settings
from veil.transparency.head import LogKeys

Forked = Callable[[VeilClient, Fork], ForkedLog]


@pytest.fixture
def forked(api: LiveServer, settings: Settings) -> Iterator[Forked]:
    """Make the real log, as a witness reads it, forked and signed with the real log key."""
    assert settings.transparency_keys_file is not None
    keys = LogKeys.load(settings.transparency_keys_file)
    readers: list[httpx.Client] = []

    def make(witness: VeilClient, fork: Fork) -> ForkedLog:
        readers.append(api.client(headers={"Authorization": f"Bearer {witness.access_token()}"}))
        return ForkedLog(readers[-1], keys, fork)

    yield make
    for reader in readers:  # an open connection would hold up the server's shutdown
        reader.close()


def held(client: VeilClient, cid: str) -> str:
    return client.held_conversations().get(cid, "")


def test_a_forked_log_is_caught_through_gossip_and_the_conversation_is_held(
    clients: Clients, api: LiveServer, forked: Forked
) -> None:
    """Bob is shown a log in which Carol's entry records other devices (a split view: the same
    number of entries, another root). His own lookups all verify against it; only comparing heads
    with Ada, who sees the real log, shows the fork, in both directions."""
    carol = clients.new("carol")
    ada = clients.new("ada")
    lying = LyingServer(api.ca_file)
    forked(carol, rewrite_entries_of(user_hash(carol.user_id))).install(lying)
    bob = clients.new("bob", transport=lying)
    cid = form_group(ada, bob)

    # Bob's lookups verify against the fork; his message carries his (forked) head.
    bob.send_text(cid, "hello from the forked side")
    assert held(bob, cid) == ""

    # Ada reads it, compares Bob's head with hers, and holds the conversation.
    ada.take_warnings()
    assert [m.text for m in ada.history(cid)] == ["hello from the forked side"]  # gossip not shown
    assert SPLIT_VIEW in held(ada, cid)
    assert any(SPLIT_VIEW in w.lower() and "resume" in w for w in ada.take_warnings())
    with pytest.raises(SplitViewError, match="Nothing more is sent"):
        ada.send_text(cid, "this must not be sent")

    # Once Ada resumes (after comparing safety numbers), her message carries the real head, and
    # Bob's client holds the conversation in turn.
    assert ada.resume_conversation(cid)
    ada.send_text(cid, "hello from the real side")
    assert [m.text for m in bob.history(cid)] == ["hello from the forked side", "hello from the real side"]
    assert SPLIT_VIEW in held(bob, cid)
    with pytest.raises(SplitViewError):
        bob.send_text(cid, "this must not be sent either")
    assert [m.text for m in ada.history(cid)] == ["hello from the forked side", "hello from the real side"]


def test_members_who_see_the_same_log_hold_nothing(clients: Clients) -> None:
    ada, bob = clients.new("ada"), clients.new("bob")
    cid = form_group(ada, bob)
    ada.send_text(cid, "one")
    bob.send_text(cid, "two")
    # Each first message is followed by its sender's head (seq 2 and 4), checked and not shown.
    assert [(m.seq, m.text) for m in ada.history(cid)] == [(1, "one"), (3, "two")]
    assert [(m.seq, m.text) for m in bob.history(cid)] == [(1, "one"), (3, "two")]
    assert ada.held_conversations() == bob.held_conversations() == {}
    ada.send_text(cid, "three")  # the heads were compared both ways: nothing is held


def test_a_head_the_server_keeps_from_being_checked_is_checked_later_or_holds_the_chat(
    clients: Clients, api: LiveServer
) -> None:
    """Gossip is recognisable to the server (a `system` message), so it may refuse the requests
    that check it; the head stays pending: checked at the next read, and after three refused
    checks the conversation is held as if the check had failed."""
    lying = LyingServer(api.ca_file)
    ada = clients.new("ada", transport=lying)
    bob = clients.new("bob")
    first, second = form_group(ada, bob), form_group(ada, bob)
    ada.transparency_head()
    clients.new("carol")  # the log grows: Bob's next head is larger than the one Ada holds
    bob.transparency_head()

    refusal = lying.refuse("GET", "/v1/transparency/(head|consistency)")
    bob.send_text(first, "a head follows this message")
    assert [m.text for m in ada.history(first)] == ["a head follows this message"]
    assert held(ada, first) == "" and any("trying again later" in w for w in ada.take_warnings())
    lying.stop(refusal)
    ada.history(first)  # checked now, and consistent
    assert ada.held_conversations() == {}
    ada.send_text(first, "nothing was held")

    clients.new("dave")
    bob.transparency_head()
    lying.refuse("GET", "/v1/transparency/(head|consistency)")
    bob.send_text(second, "another head follows")
    for _ in range(3):
        ada.history(second)
    assert "did not let this device check a tree head" in held(ada, second)
    with pytest.raises(SplitViewError):
        ada.send_text(second, "not sent")
    assert held(ada, first) == ""


@pytest.mark.parametrize("fork", ["rewritten", "removed"])
def test_a_rewritten_or_removed_entry_is_caught_by_a_client_that_saw_the_older_head(
    clients: Clients, api: LiveServer, forked: Forked, fork: str
) -> None:
    carol = clients.new("carol")
    lying = LyingServer(api.ca_file)
    ada = clients.new("ada", transport=lying)
    seen = ada.transparency_head()  # the real log, with Carol's entries
    target = user_hash(carol.user_id)
    lie = rewrite_entries_of(target) if fork == "rewritten" else remove_entries_of(target)
    forked(carol, lie).install(lying)
    dave = clients.new("dave")  # the log grows; any later head must extend the one Ada saw
    before = len(lying.sent)
    # Either another root at Ada's size, or a larger head that does not extend hers.
    with pytest.raises(SplitViewError, match=f"{SPLIT_VIEW}: .*(size {seen.tree_size})"):
        ada.transparency_head()
    with pytest.raises(SplitViewError):
        ada.open_session(dave.user_id)
    assert not [s for s in lying.sent[before:] if s.method == "POST"]  # no claim, nothing sent


def test_keys_the_log_does_not_hold_are_refused_even_at_first_contact(
    clients: Clients, api: LiveServer
) -> None:
    """The server shows Bob another master key for Ada, then a device of Mallory's among Ada's; a
    client without any pinned key for Ada refuses both, because the log says otherwise."""
    ada, mallory = clients.new("ada"), clients.new("mallory")
    lying = LyingServer(api.ca_file)
    bob = clients.new("bob", transport=lying)
    with as_device(api, mallory) as http:
        listing = http.get(f"/v1/users/{mallory.user_id}/devices").json()

    before = len(lying.sent)
    swap = lying.rewrite(
        "GET", devices_path(ada.user_id), lambda body: {**body, "master_key": listing["master_key"]}
    )
    with pytest.raises(TransparencyError, match="master key the server shows is not the one in the log"):
        bob.open_session(ada.user_id)
    lying.stop(swap)

    extra = lying.rewrite("GET", devices_path(ada.user_id), with_items(*listing["items"]))
    with pytest.raises(
        TransparencyError, match="certified devices the server lists are not those in the log"
    ):
        bob.open_session(ada.user_id)
    assert not [s for s in lying.sent[before:] if s.method == "POST"]  # no claim, nothing sent
    lying.stop(extra)
    assert bob.open_session(ada.user_id)  # the truth again: a session with Ada's one device


def test_a_head_signed_by_another_key_is_refused(clients: Clients, api: LiveServer, tmp_path: Path) -> None:
    lying = LyingServer(api.ca_file)
    ada = clients.new("ada", transport=lying)
    ada.transparency_head()
    LogKeys.generate_file(tmp_path / "other-log-keys.json")
    other = LogKeys.load(tmp_path / "other-log-keys.json")

    def resigned(body: dict[str, object]) -> dict[str, object]:
        root = base64.b64decode(str(body["root_hash"]))
        signed = other.sign(int(str(body["tree_size"])), int(str(body["timestamp"])), root)
        return {**body, "signature": base64.b64encode(signed.signature).decode()}

    lying.rewrite("GET", "/v1/transparency/head", resigned)
    with pytest.raises(TransparencyError, match="not signed by the log key this device pinned"):
        ada.transparency_head()


# The command line -------------------------------------------------------------------------------


def test_transparency_shows_the_head_and_flags_a_reset_this_device_did_not_make(
    api: LiveServer, tmp_path: Path
) -> None:
    cli = Cli(api, tmp_path / "home")
    email, _ = cli.sign_up("ada")
    first = cli.ok("ada", "transparency")
    assert "Key log:" in first and "first look at the log: 1 approved device(s)" in first
    assert " ! " not in first

    # Someone with Ada's password signs in elsewhere and resets her master key.
    done = cli.run("thief", "login", email, stdin=f"{PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    reset = cli.run("thief", "identity", "reset", stdin=f"{PASSWORD}\n")
    assert reset.returncode == 0, reset.stderr

    after = cli.run("ada", "transparency")
    assert after.returncode == 0, after.stderr
    assert "! v" in after.stdout and "your master key was replaced (a reset)" in after.stdout
    assert "were not made on this device" in after.stdout
    assert "warning: Your account's keys changed: your master key was replaced" in after.stderr

    resumed = cli.run("ada", "transparency", "resume", "00000000")
    assert resumed.returncode == 1 and "is not held" in resumed.stderr


def test_a_client_follows_a_rotation_of_the_log_key_along_its_endorsement(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    keys_file = tmp_path / "transparency-keys.json"
    assert transparency_cli("rotate-key", str(keys_file)).returncode == 0
    limits = {
        "VEIL_AUTH_RATE": "10000",
        "VEIL_AUTH_BURST": "10000",
        "VEIL_TRANSPARENCY_KEYS_FILE": str(keys_file),
    }
    first = make_server(**limits)
    clients = Clients(first, tmp_path)
    ada = clients.new("ada")
    before = ada.transparency_head()
    pinned = LogKeys.load(keys_file).public_key
    ada.close()
    first.stop()

    assert transparency_cli("rotate-key", str(keys_file)).returncode == 0
    rotated = LogKeys.load(keys_file)
    assert rotated.public_key != pinned and [e.previous_key for e in rotated.endorsements] == [pinned]
    second = make_server(**limits)
    again = VeilClient(
        second.base_url,
        verify=second.ca_file,
        keystore=clients.keystore("ada"),
        passphrase=clients.passphrase("ada"),
        scrypt=FAST,
    )
    (tmp_path / "second").mkdir()
    later = Clients(second, tmp_path / "second")
    try:
        bob = later.new("bob")  # the log grows under the new key
        after = again.transparency_head()
        assert after.tree_size > before.tree_size
        again.open_session(bob.user_id)  # lookups verify under the new key too
    finally:
        again.close()
        later.close()
