"""Group names end to end: sealed into `encrypted_meta` by the creator, readable by members once a
member's device hands them the group's meta key, never by the server (sdk/group_names.py); and an
unreadable message explained in words (sdk/failure_messages.py)."""

from __future__ import annotations

import json
import re
import ssl
import uuid
from pathlib import Path

import httpx

from tests.e2e.test_cli import UUID, Cli
from tests.support.clients import Clients
from tests.support.databases import query
from tests.support.server import LiveServer
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import Conversation
from veil.core.binary import looks_like_text

NAME = "Sunday hikes canary-g1 7f3e"
DESCRIPTION = "Meet at the station canary-g2 51ab"


def listed(client: VeilClient, cid: str) -> Conversation:
    return next(c for c in client.conversations() if c.conversation_id == cid)


def test_members_see_the_name_the_server_never_does(clients: Clients, database_url: str) -> None:
    ada, bob, carol = clients.new("ada"), clients.new("bob"), clients.new("carol")
    created = ada.create_group(NAME, description=DESCRIPTION)
    cid = created.conversation_id
    assert (created.name, created.description) == (NAME, DESCRIPTION)

    ada.invite(cid, bob.user_id)
    invitation = listed(bob, cid)
    assert (invitation.name, invitation.invited_by) == (None, ada.user_id)  # "a group by Ada"
    bob.accept(cid)
    ada.send_text(cid, "welcome")  # her sender key goes out, and the meta key with it
    joined = listed(bob, cid)
    assert (joined.name, joined.description, joined.invited_by) == (NAME, DESCRIPTION, None)

    # Any member who holds the key hands it on: Carol learns the name from Bob's first message.
    ada.invite(cid, carol.user_id)
    carol.accept(cid)
    assert listed(carol, cid).name is None
    bob.send_text(cid, "hello carol")
    assert listed(carol, cid).name == NAME

    (row,) = query(database_url, "SELECT encrypted_meta FROM conversations WHERE id = $1", uuid.UUID(cid))
    stored = bytes(row["encrypted_meta"])
    assert len(stored) >= 28 and not looks_like_text(stored)
    assert b"canary-g" not in stored
    api_view = ada.conversation(cid)
    assert api_view.encrypted_meta == stored and api_view.name is None  # only `conversations` opens it


def test_a_message_without_its_key_is_explained_in_words(clients: Clients) -> None:
    ada, bob = clients.new("ada"), clients.new("bob")
    cid = ada.create_group("keys").conversation_id
    ada.invite(cid, bob.user_id)
    bob.accept(cid)
    ada.send_text(cid, "you will not read this")
    # Bob's device loses what Ada's device sent it (her sender key among it) unread.
    api = clients.api
    tls = ssl.create_default_context(cafile=str(api.ca_file))
    with httpx.Client(base_url=api.base_url, verify=tls) as http:
        headers = {"Authorization": f"Bearer {bob.access_token()}"}
        queued = http.get("/v1/devices/messages", headers=headers).json()["items"]
        assert queued
        ids = [item["id"] for item in queued]
        assert http.post("/v1/devices/messages/ack", json={"ids": ids}, headers=headers).status_code == 204
    (unread,) = [m for m in bob.history(cid) if m.sender_id == ada.user_id]
    assert unread.plaintext is None and unread.failure == "waiting_for_key"
    assert unread.error == "cannot read this message yet: waiting for the sender's new key"


def test_the_cli_shows_names_and_lists_as_json(api: LiveServer, tmp_path: Path) -> None:
    cli = Cli(api, tmp_path / "home")
    (ada_email, ada_id), (bob_email, bob_id) = cli.sign_up("ada"), cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", bob_email, bob_id)
    cli.ok("bob", "contacts", "add", ada_email, ada_id)
    created = re.search(UUID, cli.ok("ada", "group", "create", "hikes", "--description", DESCRIPTION))
    assert created
    group_id = created.group(0)
    cli.ok("ada", "group", "invite", "hikes", bob_email)
    assert f"{group_id}  a group by {ada_email}:" in cli.ok("bob", "conversations")
    assert group_id in cli.ok("bob", "group", "accept", ada_email)  # by who invited
    cli.ok("ada", "send", "hikes", "see you at nine")

    assert f'{group_id}  "hikes":' in cli.ok("bob", "conversations")
    (listed,) = json.loads(cli.ok("bob", "conversations", "--json"))
    assert (listed["name"], listed["description"], listed["invited"]) == ("hikes", DESCRIPTION, False)
    assert {m["name"]: m["state"] for m in listed["members"]} == {"you": "joined", ada_email: "joined"}
    history = json.loads(cli.ok("bob", "history", group_id, "--json"))
    assert [(m["sender"], m["text"], m["failure"]) for m in history] == [(ada_email, "see you at nine", None)]
    assert json.loads(cli.ok("bob", "contacts", "--json")) == [{"name": ada_email, "user_id": ada_id}]
    cli.ok("bob", "block", ada_email)
    assert [b["user_id"] for b in json.loads(cli.ok("bob", "blocks", "--json"))] == [ada_id]
    (device,) = json.loads(cli.ok("bob", "devices", "--json"))
    assert device["current"] and device["approved"]
    assert re.fullmatch(r"veil-client \S+\n", cli.ok("bob", "--version"))
