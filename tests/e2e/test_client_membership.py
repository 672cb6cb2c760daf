"""Membership through the reference client: every change a signed commit on the latest event, so
members who act at the same time never fork the chain, and every member computes the same roster."""

from __future__ import annotations

import httpx
import pytest

from tests.support.clients import Clients
from veil.client.sdk.models import NotAllowedError


def test_a_change_built_on_a_stale_event_is_rebuilt_and_the_chain_holds(clients: Clients) -> None:
    owner, admin, dave, erin = (clients.new(n) for n in ("owner", "admin", "dave", "erin"))
    cid = owner.create_group().conversation_id
    owner.invite(cid, admin.user_id)
    admin.accept(cid)
    owner.set_role(cid, admin.user_id, "admin")

    # The admin builds its invitation on the latest event, and just before it reaches the server
    # the owner's invitation lands: the server records the owner's, refuses the admin's (409 with
    # `last_event_id`), and the admin's client checks the new event and builds again on it.
    statuses: list[int] = []

    def owner_gets_there_first(request: httpx.Request) -> None:
        if request.url.path.endswith("/invitations") and not statuses:
            statuses.append(0)
            owner.invite(cid, dave.user_id)

    def record(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/invitations"):
            statuses.append(response.status_code)

    admin._http.event_hooks["request"].append(owner_gets_there_first)
    admin._http.event_hooks["response"].append(record)
    admin.invite(cid, erin.user_id)
    assert statuses == [0, 409, 201]
    dave.accept(cid)
    erin.accept(cid)

    everyone = (owner, admin, dave, erin)
    expected = {c.user_id for c in everyone}
    views = [c.membership(cid) for c in everyone]
    assert all(view.members == expected for view in views)
    assert len({view.roster_hash_at(view.current_epoch) for view in views}) == 1
    assert views[0].roles[admin.user_id] == "admin"
    # And they talk: each reads the others under the shared roster.
    owner.send_text(cid, "welcome, both")
    for reader in (admin, dave, erin):
        assert [m.text for m in reader.history(cid)] == ["welcome, both"]


def test_a_member_cannot_sign_a_change_its_role_does_not_allow(clients: Clients) -> None:
    owner, member, outsider = clients.new("owner"), clients.new("member"), clients.new("outsider")
    cid = owner.create_group().conversation_id
    owner.invite(cid, member.user_id)
    member.accept(cid)
    # The client refuses before asking the server: its peers would refuse such a commit anyway.
    with pytest.raises(NotAllowedError, match="owner or admin"):
        member.invite(cid, outsider.user_id)
    assert {m.user_id for m in owner.conversation(cid).members} == {owner.user_id, member.user_id}
