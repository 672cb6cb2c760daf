"""Signed membership commits, and each member's own fold of a conversation's membership history.

The server records who was invited, joined, left or was removed, and lists it (`GET …/events`).
Trusting that list would let the server (or whoever runs it) add a member unseen and hand them
every later group key. So every change to a group carries a *commit* signed by the acting device:
its certificate chains to the actor's pinned master key, it names the roster that results and the
hash of the previous commit. Members fold the history themselves, with the same rules the server
applies, and either reach the same roster or refuse the conversation.

Commit bytes are `body || Ed25519 signature (64)` by the acting device's signing key over `body`:

    body = length_prefixed(b"veil/commit/v1", conversation_id(16), epoch u64, action, actor(16),
                           actor_device(16), subject(16), role, roster_hash(32), previous_hash(32),
                           identity_key(32), signing_key(32), certificate(64))

`role` is the new role for `role_changed` and empty otherwise. The `created` commit names the nil
conversation id: the server assigns the id after the request (and its commit) was made; every
later commit names the real id and links back to it by hash, which binds the chain to it.

A direct conversation has no commits: its roster is the pair named when it was created, which the
client checks itself. A group's last owner leaving is followed by an uncommitted `role_changed` by
the same actor, the server's promotion of an heir (an admin if there is one), since the leave's
commit already covers the resulting roster.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from veil.client.protocol.codec import (
    b64decode,
    b64encode,
    canonical_uuid,
    read_bytes,
    read_int,
    read_list,
    read_mapping,
    read_str,
)
from veil.client.protocol.commit import (
    ACTIONS,
    ASSIGNABLE_ROLES,
    CREATION_CONVERSATION_ID,
    HASH_SIZE,
    NO_PREVIOUS,
    Commit,
    commit_hash,
    roster_hash,
)
from veil.client.protocol.errors import MembershipError
from veil.client.protocol.identity import verify_certificate

ROSTER_HISTORY = 64
_MANAGERS = ("owner", "admin")
_STATE_VERSION = 1
_STATE_KEYS = frozenset(
    {
        "version",
        "conversation_id",
        "conversation_type",
        "me",
        "started",
        "epoch",
        "roles",
        "invited",
        "pair",
        "rosters",
        "last_commit_hash",
        "last_event_id",
        "heir_due_from",
    }
)
# Field sizes of the commit body in order; None marks a variable-length ASCII field.

MasterKeyOf = Callable[[str], bytes | None]


@dataclass(frozen=True)
class _Event:
    """One `…/events` item, its types checked and its ids canonical."""

    event_id: int
    epoch: int
    kind: str
    actor_id: str | None
    actor_device_id: str | None
    subject_id: str
    commit: bytes | None

    @classmethod
    def read(cls, item: Mapping[str, Any]) -> _Event:
        if not isinstance(item, Mapping):
            raise MembershipError("an event must be a JSON object")
        label = f"event {item.get('event_id')!r}"
        try:
            kind = read_str(item, "kind")
            if kind not in ACTIONS:
                raise ValueError(f"unknown kind {kind!r}")
            actor, device, commit = item.get("actor_id"), item.get("actor_device_id"), item.get("commit")
            return cls(
                event_id=read_int(item, "event_id"),
                epoch=read_int(item, "epoch"),
                kind=kind,
                actor_id=None if actor is None else canonical_uuid(actor, field="actor_id"),
                actor_device_id=None if device is None else canonical_uuid(device, field="actor_device_id"),
                subject_id=canonical_uuid(read_str(item, "subject_id"), field="subject_id"),
                commit=None if commit is None else b64decode(commit, field="commit"),
            )
        except ValueError as error:
            raise MembershipError(f"{label}: malformed: {error}") from None


class _Refused(Exception):
    """A rule broken; the caller adds which event (or which planned commit) broke it."""


@dataclass
class _Chain:
    """Everything the fold knows after the last verified event."""

    conversation_id: str
    conversation_type: str
    me: str
    started: bool = False
    epoch: int = 0
    roles: dict[str, str] = field(default_factory=dict)  # joined members only
    invited: set[str] = field(default_factory=set)
    pair: tuple[str, ...] = ()
    rosters: dict[int, frozenset[str]] = field(default_factory=dict)
    last_commit_hash: bytes = NO_PREVIOUS
    last_event_id: int = 0
    # Set after the last owner left: the next event must be the server's heir promotion.
    heir_due_from: tuple[str, str | None] | None = None


@dataclass(frozen=True)
class _Outcome:
    roles: dict[str, str]
    invited: set[str]
    epoch: int
    owner_left: bool


def _group_outcome(chain: _Chain, action: str, actor: str, subject: str, role: str) -> _Outcome:
    """The membership after a committed group change, or `_Refused` naming the rule it breaks."""
    roles, invited = dict(chain.roles), set(chain.invited)
    if not chain.started:
        if action != "created":
            raise _Refused(f"a group's history starts with `created`, not `{action}`")
        if actor != subject:
            raise _Refused("`created` names its creator as subject")
        return _Outcome({actor: "owner"}, set(), 0, owner_left=False)
    if chain.heir_due_from is not None:
        raise _Refused("the last owner left and no heir was promoted")
    actor_role = roles.get(actor)
    owner_left = False
    if action == "created":
        raise _Refused("a conversation is created only once")
    elif action == "invited":
        if actor_role not in _MANAGERS:
            raise _Refused("only a joined owner or admin invites")
        if subject in roles or subject in invited:
            raise _Refused("the subject is already a member or invited")
        invited.add(subject)
    elif action in ("joined", "declined"):
        if actor != subject:
            raise _Refused(f"only the invitee itself has `{action}`")
        if subject not in invited:
            raise _Refused(f"`{action}` without an invitation")
        invited.discard(subject)
        if action == "joined":
            roles[subject] = "member"
    elif action == "left":
        if actor != subject:
            raise _Refused("only the member itself leaves (removing someone is `removed`)")
        if subject not in roles and subject not in invited:
            raise _Refused("the subject is neither a member nor invited")
        owner_left = roles.pop(subject, None) == "owner"
        invited.discard(subject)
    elif action == "removed":
        if actor == subject:
            raise _Refused("removing oneself is `left`")
        if actor_role not in _MANAGERS:
            raise _Refused("only a joined owner or admin removes")
        if subject not in roles and subject not in invited:
            raise _Refused("the subject is neither a member nor invited")
        if roles.get(subject) == "owner":
            raise _Refused("the owner cannot be removed")
        if roles.get(subject) == "admin" and actor_role != "owner":
            raise _Refused("only the owner removes an admin")
        roles.pop(subject, None)
        invited.discard(subject)
    elif action == "role_changed":
        if actor_role != "owner":
            raise _Refused("only the owner changes roles")
        if subject not in roles:
            raise _Refused("only joined members get a role")
        if roles[subject] == "owner":
            raise _Refused("the owner's own role does not change")
        if role not in ASSIGNABLE_ROLES:
            raise _Refused("a role change makes an admin or a member")
        if roles[subject] == role:
            raise _Refused(f"the subject is already {role}")
        roles[subject] = role
    else:
        raise _Refused(f"unknown action {action!r}")
    epoch = chain.epoch + (set(roles) != set(chain.roles))
    return _Outcome(roles, invited, epoch, owner_left)


def _direct_outcome(chain: _Chain, event: _Event) -> _Outcome:
    """The membership after a direct conversation's (uncommitted) event, or `_Refused`."""
    actor, subject = event.actor_id, event.subject_id
    if event.commit is not None:
        raise _Refused("a direct conversation carries no commits")
    if actor is None:
        raise _Refused("the event names no actor")
    if not chain.started:
        if event.kind != "created":
            raise _Refused(f"a direct conversation's history starts with `created`, not `{event.kind}`")
        if actor == subject:
            raise _Refused("a direct conversation is between two different users")
        if chain.me not in (actor, subject):
            raise _Refused("this user is not one of the direct conversation's two users")
        return _Outcome({actor: "member", subject: "member"}, set(), 0, owner_left=False)
    if actor not in chain.pair or subject not in chain.pair:
        raise _Refused("a direct conversation has exactly two users; this event names a third")
    if actor != subject:
        raise _Refused("in a direct conversation users only leave or come back themselves")
    roles = dict(chain.roles)
    if event.kind == "left" and subject in roles:
        del roles[subject]
    elif event.kind == "joined" and subject not in roles:
        roles[subject] = "member"
    else:
        raise _Refused(f"`{event.kind}` is not a possible change of this direct conversation")
    return _Outcome(roles, set(), chain.epoch + 1, owner_left=False)


def _promote_heir(chain: _Chain, event: _Event) -> None:
    """Check and apply the server's uncommitted promotion of an heir after the last owner left."""
    assert chain.heir_due_from is not None
    leaver, leaver_device = chain.heir_due_from
    if event.kind != "role_changed" or event.commit is not None:
        raise _Refused("the last owner left and no heir was promoted")
    if (event.actor_id, event.actor_device_id) != (leaver, leaver_device):
        raise _Refused("the heir's promotion is recorded by the owner who left")
    if event.epoch != chain.epoch:
        raise _Refused(f"epoch {event.epoch}, expected {chain.epoch} (a promotion keeps the epoch)")
    if event.subject_id not in chain.roles:
        raise _Refused("the heir is not a joined member")
    if "admin" in chain.roles.values() and chain.roles[event.subject_id] != "admin":
        raise _Refused("the heir must be an admin when there is one")
    chain.roles[event.subject_id] = "owner"
    chain.heir_due_from = None


def _check_commit(chain: _Chain, event: _Event, master_key_of: MasterKeyOf) -> tuple[Commit, _Outcome]:
    """Verify a group event's commit against the event, the rules and the chain so far."""
    if event.commit is None:
        if event.kind == "role_changed":
            raise _Refused("a role change without a commit (only an heir's promotion has none)")
        raise _Refused(f"missing commit for `{event.kind}` in a group")
    try:
        commit = Commit.parse(event.commit)
    except MembershipError as error:
        raise _Refused(str(error)) from None
    expected_conversation = CREATION_CONVERSATION_ID if event.kind == "created" else chain.conversation_id
    if commit.conversation_id != expected_conversation:
        raise _Refused("the commit is for another conversation")
    differing = [
        name
        for name, signed, listed in (
            ("action", commit.action, event.kind),
            ("actor", commit.actor_id, event.actor_id),
            ("actor device", commit.actor_device_id, event.actor_device_id),
            ("subject", commit.subject_id, event.subject_id),
            ("epoch", commit.epoch, event.epoch),
        )
        if signed != listed
    ]
    if differing:
        raise _Refused(f"the commit's {', '.join(differing)} differ from the event's")
    outcome = _group_outcome(chain, commit.action, commit.actor_id, commit.subject_id, commit.role)
    if event.epoch != outcome.epoch:
        raise _Refused(
            f"epoch {event.epoch}, expected {outcome.epoch} "
            "(the epoch moves by one exactly when the joined members change)"
        )
    if not outcome.roles:
        raise _Refused("a change that leaves nobody joined is never recorded")
    if commit.roster_hash != roster_hash(outcome.roles):
        raise _Refused("the commit's roster hash differs from the roster this change results in")
    if commit.previous_hash != chain.last_commit_hash:
        raise _Refused("the commit's previous hash does not link to the previous commit")
    master_key = master_key_of(commit.actor_id)
    if master_key is None:
        raise _Refused("no pinned master key for the actor")
    if not verify_certificate(
        master_key,
        commit.actor_id,
        commit.actor_device_id,
        commit.identity_key,
        commit.signing_key,
        commit.certificate,
    ):
        raise _Refused("the acting device's certificate does not verify under the actor's master key")
    if not commit.signature_verifies():
        raise _Refused("the commit's signature does not verify under the acting device's signing key")
    return commit, outcome


def _fold(chain: _Chain, event: _Event, master_key_of: MasterKeyOf) -> None:
    """Apply one event to `chain` in place, or raise `_Refused`."""
    if event.event_id <= chain.last_event_id:
        raise _Refused(f"event ids must increase (the last one was {chain.last_event_id})")
    if chain.conversation_type == "direct":
        outcome = _direct_outcome(chain, event)
        if event.epoch != outcome.epoch:
            raise _Refused(f"epoch {event.epoch}, expected {outcome.epoch}")
        if not outcome.roles:
            raise _Refused("a change that leaves nobody joined is never recorded")
        if not chain.started:
            chain.pair = tuple(sorted(outcome.roles))
    elif chain.heir_due_from is not None:
        _promote_heir(chain, event)
        chain.last_event_id = event.event_id
        return
    else:
        commit, outcome = _check_commit(chain, event, master_key_of)
        chain.last_commit_hash = commit_hash(event.commit or b"")
        if outcome.owner_left:
            chain.heir_due_from = (commit.actor_id, commit.actor_device_id)
    chain.started = True
    chain.roles, chain.invited, chain.epoch = outcome.roles, outcome.invited, outcome.epoch
    chain.rosters[chain.epoch] = frozenset(chain.roles)
    for old in [epoch for epoch in chain.rosters if epoch <= chain.epoch - ROSTER_HISTORY]:
        del chain.rosters[old]
    chain.last_event_id = event.event_id


class MembershipView:
    """A conversation's membership as this client verified it, event by event.

    `apply` never leaves a view half-updated: on a `MembershipError` it is as it was before.
    """

    def __init__(self, chain: _Chain) -> None:
        self._chain = chain

    @classmethod
    def start(cls, conversation_id: str, conversation_type: str, me: str) -> MembershipView:
        """An empty view of a `group` or `direct` conversation, seen by user `me`."""
        if conversation_type not in ("group", "direct"):
            raise ValueError("conversation_type must be group or direct")
        return cls(_Chain(canonical_uuid(conversation_id), conversation_type, canonical_uuid(me)))

    def apply(self, events: Iterable[Mapping[str, Any]], master_key_of: MasterKeyOf) -> None:
        """Fold `…/events` items (in server order, after `last_event_id`) into the view.

        `master_key_of(user_id)` is the user's pinned master key, or None when none is pinned.
        """
        chain = copy.deepcopy(self._chain)
        for item in events:
            event = _Event.read(item)
            try:
                _fold(chain, event, master_key_of)
            except _Refused as error:
                raise MembershipError(f"event {event.event_id} ({event.kind}): {error}") from None
        self._chain = chain

    def next_commit_fields(
        self, action: str, actor: str, subject: str, role: str | None = None
    ) -> tuple[int, bytes]:
        """(epoch after, roster hash after) for a commit the acting client is about to make.

        Uses the verifier's rules, so a client cannot sign a change its peers would refuse;
        `MembershipError` if the change is not allowed. The last member leaving is allowed here
        (it deletes the conversation, so no event of it is ever verified).
        """
        if self._chain.conversation_type == "direct":
            raise MembershipError("a direct conversation carries no commits")
        try:
            outcome = _group_outcome(
                self._chain, action, canonical_uuid(actor), canonical_uuid(subject), role or ""
            )
        except (_Refused, ValueError) as error:
            raise MembershipError(f"planned `{action}`: {error}") from None
        return outcome.epoch, roster_hash(outcome.roles)

    def _require_started(self) -> _Chain:
        if not self._chain.started:
            raise MembershipError("no membership event is verified yet")
        return self._chain

    def roster_at(self, epoch: int) -> frozenset[str]:
        """The joined user ids at `epoch`; `MembershipError` if it is unknown or no longer kept."""
        roster = self._require_started().rosters.get(epoch)
        if roster is None:
            raise MembershipError(f"no verified roster for epoch {epoch}")
        return roster

    def roster_hash_at(self, epoch: int) -> bytes:
        return roster_hash(self.roster_at(epoch))

    @property
    def started(self) -> bool:
        return self._chain.started

    @property
    def conversation_id(self) -> str:
        return self._chain.conversation_id

    @property
    def conversation_type(self) -> str:
        return self._chain.conversation_type

    @property
    def current_epoch(self) -> int:
        return self._require_started().epoch

    @property
    def members(self) -> frozenset[str]:
        """The joined user ids now."""
        return frozenset(self._chain.roles)

    @property
    def roles(self) -> dict[str, str]:
        """Joined user id -> owner, admin or member (a copy)."""
        return dict(self._chain.roles)

    @property
    def invited(self) -> frozenset[str]:
        return frozenset(self._chain.invited)

    @property
    def last_commit_hash(self) -> bytes:
        """What the next commit names as previous (32 zero bytes before any commit)."""
        return self._chain.last_commit_hash

    @property
    def last_event_id(self) -> int:
        """The cursor for the next `…/events` request."""
        return self._chain.last_event_id

    def to_state(self) -> dict[str, Any]:
        chain = self._chain
        return {
            "version": _STATE_VERSION,
            "conversation_id": chain.conversation_id,
            "conversation_type": chain.conversation_type,
            "me": chain.me,
            "started": chain.started,
            "epoch": chain.epoch,
            "roles": dict(sorted(chain.roles.items())),
            "invited": sorted(chain.invited),
            "pair": list(chain.pair),
            "rosters": [
                {"epoch": epoch, "members": sorted(members)}
                for epoch, members in sorted(chain.rosters.items())
            ],
            "last_commit_hash": b64encode(chain.last_commit_hash),
            "last_event_id": chain.last_event_id,
            "heir_due_from": None if chain.heir_due_from is None else list(chain.heir_due_from),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MembershipView:
        """The inverse of `to_state`; `ValueError` for anything it would not have written."""
        if set(state) != _STATE_KEYS:
            raise ValueError(f"a membership state has exactly the members {sorted(_STATE_KEYS)}")
        if read_int(state, "version") != _STATE_VERSION:
            raise ValueError("unsupported membership state version")
        view = cls.start(
            read_str(state, "conversation_id"), read_str(state, "conversation_type"), read_str(state, "me")
        )
        chain = view._chain
        started = state.get("started")
        if not isinstance(started, bool):
            raise ValueError("started must be a boolean")
        chain.started = started
        chain.epoch = read_int(state, "epoch")
        for user_id, role in read_mapping(state, "roles").items():
            if role not in ("owner", *ASSIGNABLE_ROLES):
                raise ValueError(f"unknown role {role!r}")
            chain.roles[_canonical_key(user_id)] = role
        chain.invited = {_canonical_key(user_id) for user_id in read_list(state, "invited")}
        chain.pair = tuple(_canonical_key(user_id) for user_id in read_list(state, "pair"))
        for entry in read_list(state, "rosters"):
            if not isinstance(entry, Mapping) or set(entry) != {"epoch", "members"}:
                raise ValueError("rosters must hold {epoch, members} objects")
            epoch = read_int(entry, "epoch")
            if epoch in chain.rosters:
                raise ValueError(f"epoch {epoch} has two rosters")
            chain.rosters[epoch] = frozenset(
                _canonical_key(user_id) for user_id in read_list(entry, "members")
            )
        chain.last_commit_hash = read_bytes(state, "last_commit_hash", size=HASH_SIZE)
        chain.last_event_id = read_int(state, "last_event_id")
        heir = state.get("heir_due_from")
        if heir is not None:
            if not isinstance(heir, list) or len(heir) != 2 or not isinstance(heir[0], str):
                raise ValueError("heir_due_from must be [user_id, device_id or null]")
            chain.heir_due_from = (
                _canonical_key(heir[0]),
                None if heir[1] is None else _canonical_key(heir[1]),
            )
        _check_consistent(chain)
        return view


def _canonical_key(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("user ids must be strings")
    return canonical_uuid(value)


def _check_consistent(chain: _Chain) -> None:
    """Refuse a saved state no fold could have produced."""
    if not chain.started:
        if (
            chain.roles
            or chain.invited
            or chain.pair
            or chain.rosters
            or chain.epoch
            or chain.last_event_id
            or chain.heir_due_from
            or chain.last_commit_hash != NO_PREVIOUS
        ):
            raise ValueError("a view with no verified event holds no membership")
        return
    if chain.rosters.get(chain.epoch) != frozenset(chain.roles):
        raise ValueError("the current epoch's roster differs from the joined members")
    if any(not chain.epoch - ROSTER_HISTORY < epoch <= chain.epoch for epoch in chain.rosters):
        raise ValueError("a kept roster is outside the last 64 epochs")
    if chain.invited & set(chain.roles):
        raise ValueError("a member cannot be both joined and invited")
    if chain.conversation_type == "direct":
        if len(chain.pair) != 2 or chain.me not in chain.pair or not set(chain.roles) <= set(chain.pair):
            raise ValueError("a direct conversation's pair must hold this user and the joined members")
        if chain.invited or chain.heir_due_from is not None or chain.last_commit_hash != NO_PREVIOUS:
            raise ValueError("a direct conversation has no invitations, heirs or commits")
    elif chain.pair:
        raise ValueError("a group has no pair")
    elif chain.heir_due_from is None and list(chain.roles.values()).count("owner") != 1:
        raise ValueError("a group has exactly one owner")
