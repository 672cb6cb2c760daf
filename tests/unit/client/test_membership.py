"""Membership commits and the members' own fold of `…/events`: each forged history is refused.

The histories are built as an honest server would list them, with commits made by honest
clients; each attack then changes one thing (a field, a signer, an event) and the view must refuse
it with a message that names the rule.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from veil.client.protocol.codec import b64encode, length_prefixed
from veil.client.protocol.commit import (
    CREATION_CONVERSATION_ID,
    NO_PREVIOUS,
    Commit,
    commit_hash,
    creation_commit,
    make_commit,
    roster_hash,
)
from veil.client.protocol.errors import MembershipError
from veil.client.protocol.identity import MasterKey
from veil.client.protocol.keys import DeviceKeys
from veil.client.protocol.membership import ROSTER_HISTORY, MembershipView


@dataclass
class Member:
    """A user with one device, certified by the user's master key."""

    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    device_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    keys: DeviceKeys = field(default_factory=lambda: DeviceKeys.generate(one_time=0))
    master: MasterKey = field(default_factory=MasterKey.generate)

    @property
    def certificate(self) -> bytes:
        return self.master.certify(
            self.user_id, self.device_id, self.keys.identity_key, self.keys.signing_key
        )


class History:
    """A conversation's `…/events` items, with commits made by the acting members' devices."""

    def __init__(self, conversation_id: str | None = None) -> None:
        self.conversation_id = conversation_id or str(uuid.uuid4())
        self.events: list[dict[str, Any]] = []
        self.previous = NO_PREVIOUS
        self.masters: dict[str, bytes] = {}

    def know(self, *members: Member) -> None:
        for member in members:
            self.masters[member.user_id] = member.master.public_key

    def master_key_of(self, user_id: str) -> bytes | None:
        return self.masters.get(user_id)

    def event(
        self,
        kind: str,
        actor: Member,
        subject: Member,
        epoch: int,
        commit: bytes | None,
        *,
        event_epoch: int | None = None,
    ) -> dict[str, Any]:
        item = {
            "event_id": len(self.events) + 1,
            "epoch": epoch if event_epoch is None else event_epoch,
            "kind": kind,
            "actor_id": actor.user_id,
            "actor_device_id": actor.device_id,
            "subject_id": subject.user_id,
            "commit": None if commit is None else b64encode(commit),
            "created_at": "2026-12-06T00:00:00.000Z",
        }
        self.events.append(item)
        if commit is not None:
            self.previous = commit_hash(commit)
        return item

    def commit(
        self,
        kind: str,
        actor: Member,
        subject: Member,
        epoch: int,
        roster: list[Member],
        *,
        role: str = "",
        signer: Member | None = None,
        **forged: Any,
    ) -> dict[str, Any]:
        """Append a committed event; `forged` overrides commit fields, `signer` the signing device."""
        signer = signer or actor
        self.know(actor)
        fields: dict[str, Any] = {
            "conversation_id": CREATION_CONVERSATION_ID if kind == "created" else self.conversation_id,
            "epoch": epoch,
            "action": kind,
            "actor_id": actor.user_id,
            "actor_device_id": actor.device_id,
            "signing": signer.keys.signing,
            "identity_key": signer.keys.identity_key,
            "certificate": signer.certificate,
            "subject_id": subject.user_id,
            "role": role,
            "roster_hash": roster_hash(m.user_id for m in roster),
            "previous_hash": self.previous,
        }
        event_epoch = forged.pop("event_epoch", None)
        fields.update(forged)
        return self.event(kind, actor, subject, epoch, make_commit(**fields), event_epoch=event_epoch)

    def view(self, me: Member, kind: str = "group") -> MembershipView:
        view = MembershipView.start(self.conversation_id, kind, me.user_id)
        view.apply(self.events, self.master_key_of)
        return view


@pytest.fixture
def ann() -> Member:
    return Member()


@pytest.fixture
def ben() -> Member:
    return Member()


@pytest.fixture
def cat() -> Member:
    return Member()


@pytest.fixture
def eve() -> Member:
    return Member()


@pytest.fixture
def group(ann: Member, ben: Member, cat: Member) -> History:
    """Ann creates, invites Ben and Cat, both join, Ann makes Ben admin: epoch 2, {ann, ben, cat}."""
    history = History()
    history.know(ann, ben, cat)
    history.commit("created", ann, ann, 0, [ann])
    history.commit("invited", ann, ben, 0, [ann])
    history.commit("joined", ben, ben, 1, [ann, ben])
    history.commit("invited", ann, cat, 1, [ann, ben])
    history.commit("joined", cat, cat, 2, [ann, ben, cat])
    history.commit("role_changed", ann, ben, 2, [ann, ben, cat], role="admin")
    return history


def ids(*members: Member) -> frozenset[str]:
    return frozenset(m.user_id for m in members)


def refused(history: History, me: Member, match: str, kind: str = "group") -> None:
    with pytest.raises(MembershipError, match=match):
        history.view(me, kind)


# --- commits -------------------------------------------------------------------------------------


def test_commit_round_trips_and_its_signature_verifies(ann: Member) -> None:
    raw = creation_commit(
        actor_id=ann.user_id,
        actor_device_id=ann.device_id,
        signing=ann.keys.signing,
        identity_key=ann.keys.identity_key,
        certificate=ann.certificate,
    )
    commit = Commit.parse(raw)
    assert commit.encode() == raw
    assert commit.signature_verifies()
    assert (commit.action, commit.epoch, commit.role) == ("created", 0, "")
    assert commit.roster_hash == roster_hash([ann.user_id])
    assert commit.previous_hash == NO_PREVIOUS


def test_commit_parse_is_strict(ann: Member) -> None:
    raw = creation_commit(
        actor_id=ann.user_id,
        actor_device_id=ann.device_id,
        signing=ann.keys.signing,
        identity_key=ann.keys.identity_key,
        certificate=ann.certificate,
    )
    for bad in (raw + b"\x00", raw[:-1], raw[:40], b"", b"\x00\x00\x00\x0eveil/commit/v2" + raw[18:]):
        with pytest.raises(MembershipError):
            Commit.parse(bad)
    with pytest.raises(MembershipError, match="16 KiB"):
        Commit.parse(bytes(17 * 1024))


def test_commit_parse_refuses_a_role_outside_role_changes(ann: Member) -> None:
    commit = Commit.parse(
        creation_commit(
            actor_id=ann.user_id,
            actor_device_id=ann.device_id,
            signing=ann.keys.signing,
            identity_key=ann.keys.identity_key,
            certificate=ann.certificate,
        )
    )
    body = length_prefixed(
        b"veil/commit/v1",
        uuid.UUID(commit.conversation_id).bytes,
        bytes(8),
        b"created",
        uuid.UUID(ann.user_id).bytes,
        uuid.UUID(ann.device_id).bytes,
        uuid.UUID(ann.user_id).bytes,
        b"owner",
        commit.roster_hash,
        commit.previous_hash,
        commit.identity_key,
        commit.signing_key,
        commit.certificate,
    )
    with pytest.raises(MembershipError, match="role"):
        Commit.parse(body + ann.keys.signing.sign(body))


def test_roster_hash_ignores_order_and_spelling(ann: Member, ben: Member) -> None:
    assert roster_hash([ann.user_id, ben.user_id]) == roster_hash([ben.user_id.upper(), ann.user_id])
    assert roster_hash([ann.user_id]) != roster_hash([ann.user_id, ben.user_id])


# --- a valid group history -----------------------------------------------------------------------


def test_valid_group_chain_builds_the_expected_rosters(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    view = group.view(cat)
    assert view.current_epoch == 2
    assert view.roster_at(0) == ids(ann)
    assert view.roster_at(1) == ids(ann, ben)
    assert view.roster_at(2) == view.members == ids(ann, ben, cat)
    assert view.roster_hash_at(1) == roster_hash([ann.user_id, ben.user_id])
    assert view.roles == {ann.user_id: "owner", ben.user_id: "admin", cat.user_id: "member"}
    assert view.invited == frozenset()
    assert view.last_event_id == 6
    assert view.last_commit_hash == group.previous


def test_admin_removes_a_member_and_the_owners_leave_promotes_the_admin(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    group.commit("removed", ben, cat, 3, [ann, ben])
    group.commit("left", ann, ann, 4, [ben])
    group.event("role_changed", ann, ben, 4, None)
    view = group.view(ben)
    assert view.roster_at(3) == ids(ann, ben)
    assert view.roster_at(4) == ids(ben)
    assert view.roles == {ben.user_id: "owner"}


def test_invitations_declines_and_withdrawals_keep_the_epoch(ann: Member, eve: Member) -> None:
    history = History()
    history.know(ann, eve)
    history.commit("created", ann, ann, 0, [ann])
    history.commit("invited", ann, eve, 0, [ann])
    history.commit("declined", eve, eve, 0, [ann])
    history.commit("invited", ann, eve, 0, [ann])
    history.commit("left", eve, eve, 0, [ann])
    history.commit("invited", ann, eve, 0, [ann])
    view = history.view(ann)
    assert view.current_epoch == 0
    assert view.invited == ids(eve)
    assert view.members == ids(ann)


def test_withdrawn_invitation_keeps_the_epoch_and_the_invitee_sees_the_chain(
    group: History, ann: Member, ben: Member, cat: Member, eve: Member
) -> None:
    group.commit("invited", ben, eve, 2, [ann, ben, cat])
    assert group.view(eve).invited == ids(eve)
    group.commit("removed", ben, eve, 2, [ann, ben, cat])
    view = group.view(ann)
    assert (view.current_epoch, view.invited, view.members) == (2, frozenset(), ids(ann, ben, cat))


# --- forged group histories ----------------------------------------------------------------------


def test_missing_commit_in_a_group_is_refused(group: History, ann: Member, eve: Member) -> None:
    group.event("invited", ann, eve, 2, None)
    refused(group, ann, "missing commit")


def test_commit_of_another_conversation_is_refused(group: History, ann: Member, eve: Member) -> None:
    group.commit("invited", ann, eve, 2, [ann], conversation_id=str(uuid.uuid4()))
    refused(group, ann, "another conversation")


def test_creation_commit_naming_a_conversation_id_is_refused(ann: Member) -> None:
    history = History()
    history.commit("created", ann, ann, 0, [ann], conversation_id=history.conversation_id)
    refused(history, ann, "another conversation")


def test_commit_replayed_from_another_group_is_refused(group: History, ann: Member, eve: Member) -> None:
    other = History()
    other.previous = group.previous
    other.commit("invited", ann, eve, 2, [])
    group.events.append({**other.events[-1], "event_id": 7})
    refused(group, ann, "another conversation")


def test_commit_of_another_kind_is_refused(group: History, ann: Member, cat: Member) -> None:
    group.commit("removed", ann, cat, 3, [], action="role_changed", role="admin")
    refused(group, ann, "commit's action differ from the event's")


def test_commit_about_another_subject_is_refused(
    group: History, ann: Member, cat: Member, eve: Member
) -> None:
    group.commit("invited", ann, eve, 2, [], subject_id=cat.user_id)
    refused(group, ann, "commit's subject differ from the event's")


def test_commit_of_another_epoch_is_refused(group: History, ann: Member, cat: Member) -> None:
    group.commit("removed", ann, cat, 3, [], event_epoch=4)
    refused(group, ann, "commit's epoch differ from the event's")


def test_commit_by_another_device_than_the_event_names_is_refused(
    group: History, ann: Member, cat: Member
) -> None:
    group.commit("removed", ann, cat, 3, [], actor_device_id=str(uuid.uuid4()))
    refused(group, ann, "commit's actor device differ from the event's")


def test_epoch_that_skips_is_refused(group: History, ann: Member, ben: Member, cat: Member) -> None:
    group.commit("removed", ann, cat, 4, [ann, ben])
    refused(group, ann, "epoch 4, expected 3")


def test_epoch_that_moves_without_a_roster_change_is_refused(
    group: History, ann: Member, eve: Member
) -> None:
    group.commit("invited", ann, eve, 3, [])
    refused(group, ann, "epoch 3, expected 2")


def test_invitation_by_a_plain_member_is_refused(group: History, cat: Member, eve: Member) -> None:
    group.commit("invited", cat, eve, 2, [])
    refused(group, cat, "only a joined owner or admin invites")


def test_admin_removed_by_an_admin_is_refused(group: History, ann: Member, ben: Member, cat: Member) -> None:
    group.commit("role_changed", ann, cat, 2, [ann, ben, cat], role="admin")
    group.commit("removed", ben, cat, 3, [ann, ben])
    refused(group, ann, "only the owner removes an admin")


def test_admin_removed_by_a_member_is_refused(group: History, ann: Member, ben: Member, cat: Member) -> None:
    group.commit("removed", cat, ben, 3, [ann, cat])
    refused(group, ann, "only a joined owner or admin removes")


def test_owner_cannot_be_removed(group: History, ann: Member, ben: Member, cat: Member) -> None:
    group.commit("removed", ben, ann, 3, [ben, cat])
    refused(group, ben, "owner cannot be removed")


def test_role_change_by_an_admin_is_refused(group: History, ben: Member, cat: Member) -> None:
    group.commit("role_changed", ben, cat, 2, [], role="admin")
    refused(group, cat, "only the owner changes roles")


def test_commit_signed_by_an_uncertified_device_is_refused(
    group: History, ann: Member, ben: Member, cat: Member, eve: Member
) -> None:
    ghost = Member(user_id=ann.user_id)  # a new login by whoever has Ann's password
    group.commit("invited", ghost, eve, 2, [ann, ben, cat], certificate=bytes(64))
    group.know(ann)
    refused(group, ann, "certificate does not verify")


def test_device_certified_by_another_master_key_is_refused(
    group: History, ann: Member, ben: Member, cat: Member, eve: Member
) -> None:
    ghost = Member(user_id=ann.user_id)  # certified by the server's own master key for Ann
    group.commit("invited", ghost, eve, 2, [ann, ben, cat])
    group.know(ann)
    refused(group, ann, "certificate does not verify")


def test_commit_with_a_forged_signature_is_refused(
    group: History, ann: Member, ben: Member, cat: Member, eve: Member
) -> None:
    group.commit("invited", ann, eve, 2, [ann, ben, cat])
    raw = bytearray(base64.b64decode(group.events[-1]["commit"]))
    raw[-1] ^= 1
    group.events[-1]["commit"] = b64encode(bytes(raw))
    refused(group, ann, "signature does not verify")


def test_certificate_under_another_master_key_is_refused(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    group.commit("removed", ann, cat, 3, [ann, ben])
    group.masters[ann.user_id] = MasterKey.generate().public_key  # the server reset Ann's identity
    refused(group, ben, "certificate does not verify")


def test_actor_without_a_pinned_master_key_is_refused(group: History, ann: Member, ben: Member) -> None:
    del group.masters[ann.user_id]
    refused(group, ben, "no pinned master key")


def test_broken_previous_hash_is_refused(
    group: History, ann: Member, ben: Member, cat: Member, eve: Member
) -> None:
    group.commit("invited", ann, eve, 2, [ann, ben, cat], previous_hash=bytes(32))
    refused(group, ann, "previous hash")


def test_wrong_roster_hash_is_refused(group: History, ann: Member, ben: Member, cat: Member) -> None:
    group.commit("removed", ann, cat, 3, [ann, ben, cat])
    refused(group, ann, "roster hash")


def test_ghost_join_without_invitation_is_refused(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    ghost = Member()
    group.know(ghost)
    group.commit("joined", ghost, ghost, 3, [ann, ben, cat, ghost])
    refused(group, ann, "`joined` without an invitation")


def test_join_on_behalf_of_the_invitee_is_refused(ann: Member, eve: Member) -> None:
    history = History()
    history.know(ann, eve)
    history.commit("created", ann, ann, 0, [ann])
    history.commit("invited", ann, eve, 0, [ann])
    history.commit("joined", ann, eve, 1, [ann, eve])
    refused(history, ann, "only the invitee itself")


def test_history_not_starting_with_created_is_refused(ann: Member, eve: Member) -> None:
    history = History()
    history.commit("invited", ann, eve, 0, [ann])
    refused(history, ann, "starts with `created`")


def test_second_creation_is_refused(group: History, ann: Member) -> None:
    group.commit("created", ann, ann, 0, [ann], conversation_id=CREATION_CONVERSATION_ID)
    refused(group, ann, "created only once")


def test_event_of_an_erased_actor_is_refused(group: History, ann: Member, cat: Member) -> None:
    group.commit("removed", ann, cat, 3, [])
    group.events[-1].update(actor_id=None, actor_device_id=None, commit=None)
    refused(group, ann, "missing commit")


def test_replayed_event_id_is_refused(group: History, ann: Member) -> None:
    view = group.view(ann)
    with pytest.raises(MembershipError, match="event ids must increase"):
        view.apply(group.events[-1:], group.master_key_of)


def test_malformed_event_is_refused(group: History, ann: Member) -> None:
    group.events.append({**group.events[-1], "event_id": 7, "commit": "not base64!"})
    refused(group, ann, "malformed")


# --- the heir's promotion ------------------------------------------------------------------------


def test_owner_leaving_without_an_heir_is_refused(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    group.commit("left", ann, ann, 3, [ben, cat])
    group.commit("removed", ben, cat, 4, [ben])
    refused(group, ben, "no heir")


def test_heir_must_be_the_admin_when_there_is_one(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    group.commit("left", ann, ann, 3, [ben, cat])
    group.event("role_changed", ann, cat, 3, None)
    refused(group, ben, "heir must be an admin")


def test_heir_promotion_by_someone_else_is_refused(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    group.commit("left", ann, ann, 3, [ben, cat])
    group.event("role_changed", cat, ben, 3, None)
    refused(group, ben, "owner who left")


def test_any_member_is_heir_when_there_is_no_admin(ann: Member, cat: Member) -> None:
    history = History()
    history.know(ann, cat)
    history.commit("created", ann, ann, 0, [ann])
    history.commit("invited", ann, cat, 0, [ann])
    history.commit("joined", cat, cat, 1, [ann, cat])
    history.commit("left", ann, ann, 2, [cat])
    history.event("role_changed", ann, cat, 2, None)
    assert history.view(cat).roles == {cat.user_id: "owner"}


def test_uncommitted_role_change_outside_a_succession_is_refused(
    group: History, ann: Member, cat: Member
) -> None:
    group.event("role_changed", ann, cat, 2, None)
    refused(group, cat, "role change without a commit")


def test_last_member_leaving_is_never_a_recorded_event(ann: Member) -> None:
    history = History()
    history.commit("created", ann, ann, 0, [ann])
    history.commit("left", ann, ann, 1, [])
    refused(history, ann, "leaves nobody joined")


# --- direct conversations ------------------------------------------------------------------------


def direct(a: Member, b: Member) -> History:
    history = History()
    history.event("created", a, b, 0, None)
    return history


def test_direct_conversation_is_its_pair_and_users_leave_and_come_back(ann: Member, ben: Member) -> None:
    history = direct(ann, ben)
    history.event("left", ben, ben, 1, None)
    history.event("joined", ben, ben, 2, None)
    view = history.view(ann, "direct")
    assert view.roster_at(0) == view.roster_at(2) == ids(ann, ben)
    assert view.roster_at(1) == ids(ann)
    assert view.current_epoch == 2


def test_direct_third_user_is_refused(ann: Member, ben: Member, eve: Member) -> None:
    history = direct(ann, ben)
    history.event("joined", eve, eve, 1, None)
    refused(history, ann, "exactly two users", "direct")


def test_direct_invitation_of_a_third_user_is_refused(ann: Member, ben: Member, eve: Member) -> None:
    history = direct(ann, ben)
    history.event("invited", ann, eve, 0, None)
    refused(history, ann, "exactly two users", "direct")


def test_direct_conversation_of_other_users_is_refused(ann: Member, ben: Member, eve: Member) -> None:
    refused(direct(ann, ben), eve, "not one of", "direct")


def test_direct_with_oneself_is_refused(ann: Member) -> None:
    refused(direct(ann, ann), ann, "two different users", "direct")


def test_direct_user_cannot_remove_the_other(ann: Member, ben: Member) -> None:
    history = direct(ann, ben)
    history.event("left", ann, ben, 1, None)
    refused(history, ann, "themselves", "direct")


def test_direct_epoch_that_skips_is_refused(ann: Member, ben: Member) -> None:
    history = direct(ann, ben)
    history.event("left", ben, ben, 2, None)
    refused(history, ann, "epoch 2, expected 1", "direct")


def test_direct_conversation_with_a_commit_is_refused(ann: Member, ben: Member) -> None:
    history = History()
    history.commit("created", ann, ben, 0, [ann, ben])
    refused(history, ann, "no commits", "direct")


def test_direct_conversation_plans_no_commits(ann: Member, ben: Member) -> None:
    view = direct(ann, ben).view(ann, "direct")
    with pytest.raises(MembershipError, match="no commits"):
        view.next_commit_fields("left", ann.user_id, ann.user_id)


# --- incremental use, state, bounds --------------------------------------------------------------


def test_incremental_apply_equals_one_shot(group: History, ann: Member, ben: Member, cat: Member) -> None:
    group.commit("left", ann, ann, 3, [ben, cat])
    group.event("role_changed", ann, ben, 3, None)
    whole = group.view(cat).to_state()
    for split in range(len(group.events) + 1):
        view = MembershipView.start(group.conversation_id, "group", cat.user_id)
        view.apply(group.events[:split], group.master_key_of)
        view = MembershipView.from_state(view.to_state())
        view.apply(group.events[split:], group.master_key_of)
        assert view.to_state() == whole


def test_failed_apply_leaves_the_view_unchanged(
    group: History, ann: Member, cat: Member, eve: Member
) -> None:
    view = MembershipView.start(group.conversation_id, "group", ann.user_id)
    view.apply(group.events[:3], group.master_key_of)
    before = view.to_state()
    group.commit("invited", cat, eve, 2, [])
    with pytest.raises(MembershipError):
        view.apply(group.events[3:], group.master_key_of)
    assert view.to_state() == before


def test_state_round_trip(group: History, ann: Member) -> None:
    view = group.view(ann)
    restored = MembershipView.from_state(view.to_state())
    assert restored.to_state() == view.to_state()
    assert restored.roster_at(1) == view.roster_at(1)
    assert restored.last_commit_hash == view.last_commit_hash


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"version": 2}, "version"),
        ({"extra": 1}, "exactly the members"),
        ({"roles": {}}, "roster differs"),
        ({"started": 1}, "boolean"),
        ({"last_commit_hash": "AAAA"}, "32 bytes"),
        ({"pair": [str(uuid.uuid4()), str(uuid.uuid4())]}, "group has no pair"),
        ({"rosters": []}, "roster differs"),
        ({"rosters": [{"epoch": 2, "members": []}] * 2}, "two rosters"),
        ({"conversation_type": "channel"}, "group or direct"),
        ({"invited": ["not-a-uuid"]}, "UUID"),
    ],
)
def test_from_state_refuses_what_to_state_never_writes(
    group: History, ann: Member, change: dict[str, Any], match: str
) -> None:
    state = {**group.view(ann).to_state(), **change}
    with pytest.raises(ValueError, match=match):
        MembershipView.from_state(state)


def test_from_state_refuses_a_group_with_two_owners(group: History, ann: Member, ben: Member) -> None:
    state = group.view(ann).to_state()
    state["roles"][ben.user_id] = "owner"
    with pytest.raises(ValueError, match="exactly one owner"):
        MembershipView.from_state(state)


def test_roster_history_keeps_only_the_last_64_epochs(ann: Member, ben: Member) -> None:
    history = direct(ann, ben)
    for epoch in range(1, 101):
        history.event("left" if epoch % 2 else "joined", ben, ben, epoch, None)
    view = history.view(ann, "direct")
    assert view.roster_at(100) == ids(ann, ben)
    assert view.roster_at(100 - ROSTER_HISTORY + 1) == ids(ann)
    with pytest.raises(MembershipError, match="no verified roster for epoch 36"):
        view.roster_at(100 - ROSTER_HISTORY)
    assert len(view.to_state()["rosters"]) == ROSTER_HISTORY


# --- planning the next commit --------------------------------------------------------------------


def test_next_commit_fields_match_what_the_verifier_accepts(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    view = group.view(ben)
    epoch, after = view.next_commit_fields("removed", ben.user_id, cat.user_id)
    assert (epoch, after) == (3, roster_hash([ann.user_id, ben.user_id]))
    group.commit("removed", ben, cat, epoch, [ann, ben], previous_hash=view.last_commit_hash)
    view.apply(group.events[-1:], group.master_key_of)
    assert view.members == ids(ann, ben)


@pytest.mark.parametrize(
    ("action", "actor", "subject", "role", "match"),
    [
        ("invited", "cat", "eve", None, "only a joined owner or admin invites"),
        ("removed", "ben", "ann", None, "owner cannot be removed"),
        ("role_changed", "ann", "cat", "owner", "admin or a member"),
        ("role_changed", "ann", "ben", "admin", "already admin"),
        ("joined", "eve", "eve", None, "without an invitation"),
        ("created", "ann", "ann", None, "created only once"),
        ("promoted", "ann", "cat", None, "unknown action"),
    ],
)
def test_next_commit_fields_refuses_what_the_verifier_refuses(
    group: History,
    members: dict[str, Member],
    action: str,
    actor: str,
    subject: str,
    role: str | None,
    match: str,
) -> None:
    view = group.view(members["ann"])
    with pytest.raises(MembershipError, match=match):
        view.next_commit_fields(action, members[actor].user_id, members[subject].user_id, role)


def test_last_member_may_plan_to_leave(ann: Member) -> None:
    history = History()
    history.commit("created", ann, ann, 0, [ann])
    view = history.view(ann)
    assert view.next_commit_fields("left", ann.user_id, ann.user_id) == (1, roster_hash([]))


def test_nothing_is_planned_while_an_heir_is_due(
    group: History, ann: Member, ben: Member, cat: Member
) -> None:
    group.commit("left", ann, ann, 3, [ben, cat])
    view = group.view(ben)
    with pytest.raises(MembershipError, match="no heir"):
        view.next_commit_fields("removed", ben.user_id, cat.user_id)


@pytest.fixture
def members(ann: Member, ben: Member, cat: Member, eve: Member) -> dict[str, Member]:
    return {"ann": ann, "ben": ben, "cat": cat, "eve": eve}
