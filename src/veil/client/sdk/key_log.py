"""The key-transparency log as this device checks it (ADR 0019, docs/e2ee.md "Key transparency").

Every user's keys the directory hands out are checked here against the log: the server must prove
that the master key and the certified devices it lists are the user's latest leaf in a tree whose
head the log key signed, and every head must extend the last one this device saw. A proof that does
not hold is a `TransparencyError` that names what failed; two heads that cannot both be true (a
fork, or history rewritten) a `SplitViewError`. Heads also travel between devices inside
end-to-end-encrypted `system` messages (gossip), so a server that shows each person a different log
is caught when they talk; a conversation where that happened gets nothing more from this device
until the user resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import httpx

from veil.client.protocol.codec import b64decode, canonical_uuid
from veil.client.protocol.key_log import (
    KeyEndorsement,
    KeyLogState,
    OwnChange,
    PendingGossip,
    encode_gossip,
    follow_endorsements,
)
from veil.client.protocol.keys import device_fingerprint
from veil.client.protocol.transparency import (
    SPLIT_VIEW,
    ConsistencyProof,
    InclusionProof,
    Leaf,
    SignedTreeHead,
    SplitViewError,
    TransparencyError,
    VerifiedTreeHead,
    require_leaf_matches,
    user_hash,
)
from veil.client.protocol.trust import ListedDevice
from veil.client.sdk.models import VeilError

Call = Callable[..., httpx.Response]

# A head fetched this long ago is fetched again before the next lookup, so that changes reach the
# device soon. It proves no freshness: heads are signed once per size, so a server can keep
# serving an old one (docs/e2ee.md says what that allows).
HEAD_MAX_AGE_SECONDS = 300.0
# The own monitor reads the entries appended since its last look, at most this many per look.
ENTRY_PAGE = 200
MAX_ENTRY_PAGES_PER_LOOK = 25
# A head a member sent is checked again at each read of history; after this many checks the
# server would not answer, the conversation is held as if the check had failed.
MAX_GOSSIP_ATTEMPTS = 3


class KeyLog:
    """The log's proofs and heads, checked; `state` is what the key store keeps of it."""

    def __init__(self, call: Call, warn: Callable[[str], None]) -> None:
        self._call = call
        self._warn = warn
        self.state = KeyLogState()
        self._fetched_at: float | None = None  # time.monotonic() of the last head fetched
        self._proven_index: dict[str, int] = {}  # user id -> index of the leaf proven last

    def reset(self, state: KeyLogState | None = None) -> None:
        """Start from `state` (a key store's, or nothing for another account)."""
        self.state = state or KeyLogState()
        self._fetched_at = None
        self._proven_index = {}

    # Heads -------------------------------------------------------------------------------------

    def log_key(self) -> bytes:
        """The log's Ed25519 key, pinned from the server the first time it is needed."""
        if self.state.log_key is None:
            self.state.log_key, _ = self._served_key()
        return self.state.log_key

    def _served_key(self) -> tuple[bytes, list[KeyEndorsement]]:
        body = self._call("GET", "/v1/transparency/key").json()
        try:
            endorsements = [
                KeyEndorsement(
                    b64decode(e["public_key"], size=32, field="public_key"),
                    b64decode(e["previous_key"], size=32, field="previous_key"),
                    b64decode(e["signature"], size=64, field="signature"),
                )
                for e in body.get("endorsements", [])
            ]
            return b64decode(body.get("public_key"), size=32, field="public_key"), endorsements
        except (ValueError, AttributeError, KeyError, TypeError):
            raise TransparencyError("the server's key-transparency log key is malformed") from None

    def _follow_rotation(self) -> bool:
        """Whether the server's log key moved on from the pinned one along endorsements (then it is
        pinned, and the old ones kept for heads they signed); TransparencyError if it moved
        anywhere else."""
        pinned = self.log_key()
        served, endorsements = self._served_key()
        if served == pinned:
            return False
        chain = follow_endorsements(pinned, served, endorsements)
        # The retired keys may have signed at most the log this device already saw.
        held = self.state.heads.head
        newest = 0 if held is None else held.tree_size
        self.state.retired_log_keys += [(key, newest) for key in (pinned, *chain[:-1])]
        self.state.log_key = served
        return True

    def head(self, *, fresh: bool = False) -> VerifiedTreeHead:
        """The latest head this device trusts: the stored one while recent, else the server's
        latest, checked (signature, and a consistency proof from the stored one)."""
        stored = self.state.heads.head
        recent = self._fetched_at is not None and time.monotonic() - self._fetched_at < HEAD_MAX_AGE_SECONDS
        if stored is not None and recent and not fresh:
            return stored
        served = SignedTreeHead.from_wire(self._call("GET", "/v1/transparency/head").json())
        latest = self._advance(self._verified(served, "the server's latest tree head"))
        self._fetched_at = time.monotonic()
        return latest

    def _verified(self, head: SignedTreeHead, what: str) -> VerifiedTreeHead:
        """`head` once the log key (or, after a rotation this device followed, an older one) signed
        it; a failure first checks whether the log key was rotated."""
        for attempt in range(2):
            retired = [
                key for key, newest in reversed(self.state.retired_log_keys) if head.tree_size <= newest
            ]
            for key in (self.log_key(), *retired):
                try:
                    return head.verify(key)
                except TransparencyError:
                    continue
            if attempt or not self._follow_rotation():
                break
        raise TransparencyError(f"{what} is not signed by the log key this device pinned")

    def adopt_head(self, head: SignedTreeHead, what: str) -> VerifiedTreeHead:
        """Take in a head this device did not fetch (one an earlier device of the user saw, from a
        backup): only if a log key this device trusts signed it and a consistency proof links it
        to the head held here. TransparencyError (SplitViewError for a fork) otherwise, nothing
        changed; the latest head held afterwards."""
        self.head()  # a device that holds no head yet takes the server's first, then compares
        return self._advance(self._verified(head, what))

    def _advance(self, head: VerifiedTreeHead) -> VerifiedTreeHead:
        """Check `head` against the stored one (a consistency proof between their sizes from the
        server) and keep the larger; SplitViewError if they cannot both be true."""
        stored = self.state.heads.head
        proof = None
        if stored is not None and stored.tree_size != head.tree_size:
            first, second = sorted((stored.tree_size, head.tree_size))
            proof = self._consistency(first, second)
        return self.state.heads.advance(head, proof)

    def _consistency(self, first: int, second: int) -> ConsistencyProof:
        try:
            body = self._call(
                "GET", "/v1/transparency/consistency", params={"first": first, "second": second}
            ).json()
        except VeilError as error:
            if error.status == 422:  # the server has not signed a head of that size, to this device
                raise SplitViewError(
                    f"{SPLIT_VIEW}: the server does not prove that a signed head of size {second} "
                    f"extends size {first} ({error.detail})"
                ) from None
            raise
        return ConsistencyProof.from_wire(body)

    # Users' keys -------------------------------------------------------------------------------

    def check_user(
        self, user_id: str, master_key: bytes | None, listing: Iterable[ListedDevice]
    ) -> Leaf | None:
        """TransparencyError unless the log's latest leaf for `user_id` records exactly this master
        key and these certified devices; the leaf, or None for a user the log has never seen (then
        the listing must hold no master key and no certified device)."""
        user_id = canonical_uuid(user_id)
        devices = list(listing)
        for fresh in (False, True):
            head = self.head(fresh=fresh)
            try:
                leaf = self._prove(user_id, head)
                if leaf is None:
                    if self.state.versions.get(user_id, 0) > 0:
                        raise TransparencyError(
                            f"the log no longer shows an entry for user {user_id[:8]}, as it did before"
                        )
                    if master_key is None and all(d.certificate is None for d in devices):
                        return None
                    raise TransparencyError(
                        f"the log has no entry for user {user_id[:8]}, whose keys the server lists"
                    )
                require_leaf_matches(leaf, user_id, master_key, devices)
            except SplitViewError:
                raise
            except TransparencyError:
                if fresh:
                    raise
                continue  # the stored head may predate the user's latest change: ask for the latest
            older = self.state.note_version(user_id, leaf.version)
            if older is not None:
                raise TransparencyError(
                    f"the log shows user {user_id[:8]}'s keys at version {leaf.version}, older than "
                    f"version {older} that this device saw before"
                )
            return leaf
        raise AssertionError("unreachable")  # pragma: no cover

    def _prove(self, user_id: str, head: VerifiedTreeHead) -> Leaf | None:
        if head.tree_size == 0:
            return None  # nobody has an entry in the empty log
        try:
            body = self._call(
                "GET",
                "/v1/transparency/inclusion",
                params={"user_id": user_id, "tree_size": head.tree_size},
            ).json()
        except VeilError as error:
            if error.status == 404:
                return None
            raise
        proof = InclusionProof.from_wire(body)
        leaf = proof.verify(head)
        self._proven_index[user_id] = proof.leaf_index
        return leaf

    def observe_own(
        self,
        user_id: str,
        leaf: Leaf | None,
        devices: Iterable[ListedDevice],
        held_master: bytes | None,
        this_device: str,
    ) -> None:
        """The monitor: record changes of the own user's keys since the last look, and warn about
        those this device did not make. The entries appended since the last look are searched for
        a newer entry of the own user than the one proven (a server showing its owner an old state)."""
        head = self.state.heads.head
        if leaf is None or head is None:
            return
        self._require_no_newer_own_entry(user_id, head.tree_size)
        certified = {
            d.device_id: device_fingerprint(d.identity_key, d.signing_key)
            for d in devices
            if d.certificate is not None
        }
        master = None if leaf.master_key == bytes(32) else leaf.master_key
        changes = self.state.observe_own(
            leaf.version, master, certified, held_master, head.timestamp_ms, canonical_uuid(this_device)
        )
        for change in changes:
            if not change.expected:
                self._warn(
                    f"Your account's keys changed: {change.description}. If that was not you, change "
                    "your password (`veil-client password`) and check `veil-client transparency`."
                )

    def _require_no_newer_own_entry(self, user_id: str, tree_size: int) -> None:
        """TransparencyError if an entry of `user_id` after the proven one was appended since the
        last look. The entries are not proven (the API has no range proofs), so a server that also
        leaves them out of this device's pages escapes; at least it must lie in two places."""
        start = self.state.own_checked_size
        proven = self._proven_index.get(user_id)
        if start == 0 or proven is None:  # the first look: nothing before it is this device's concern
            self.state.own_checked_size = tree_size
            return
        own = user_hash(user_id)
        for _ in range(MAX_ENTRY_PAGES_PER_LOOK):
            if start >= tree_size:
                break
            body = self._call(
                "GET", "/v1/transparency/entries", params={"start": start, "limit": ENTRY_PAGE}
            ).json()
            for item in body["items"]:
                index = int(item["index"])
                if proven < index < tree_size and b64decode(item["leaf"], field="leaf")[:32] == own:
                    raise TransparencyError(
                        f"the log holds a newer entry for your account (entry {index}) than the "
                        f"server proves (entry {proven}): it shows you an old state of your keys"
                    )
            cursor = body.get("next_cursor")
            start = tree_size if cursor is None else min(int(cursor), tree_size)
        self.state.own_checked_size = start

    def approved_here(self, device_id: str) -> None:
        """This device certified `device_id`: the monitor will not warn about it."""
        self.state.approved_here.add(canonical_uuid(device_id))

    @property
    def own_changes(self) -> list[OwnChange]:
        return list(self.state.own_changes)

    # Gossip ------------------------------------------------------------------------------------

    def gossip_payload(self, conversation_id: str, now: float) -> bytes | None:
        """The `system` plaintext carrying this device's head, if it is due in this conversation."""
        head = self.state.heads.head
        if head is None or not self.state.gossip_due(conversation_id, now):
            return None
        return encode_gossip(head)

    def gossiped(self, conversation_id: str, now: float) -> None:
        self.state.gossiped[canonical_uuid(conversation_id)] = now

    def check_gossip(self, conversation_id: str, sender_id: str, gossip: SignedTreeHead) -> None:
        """Take a head a member sent and check it against this device's view of the log (kept
        until a check decides; see `check_pending_gossip`)."""
        pending = PendingGossip(canonical_uuid(conversation_id), canonical_uuid(sender_id), gossip)
        self.state.pending_gossip.append(pending)
        self.check_pending_gossip()

    def check_pending_gossip(self) -> None:
        """Decide every head members sent that is not yet checked. A head that does not verify is
        ignored with a warning (a member could send anything); one that cannot be true together with
        this device's holds the conversation (a split view); one the server keeps this device from
        checking is tried again later, and after `MAX_GOSSIP_ATTEMPTS` holds the conversation too."""
        undecided = []
        for pending in self.state.pending_gossip:
            if not self._decide(pending):
                undecided.append(replace(pending, attempts=pending.attempts + 1))
        self.state.pending_gossip = []
        for pending in undecided:
            who = f"user {pending.sender_id[:8]}"
            if pending.attempts >= MAX_GOSSIP_ATTEMPTS:
                self._hold(
                    pending.conversation_id,
                    f"the server did not let this device check a tree head from {who} in "
                    f"{pending.attempts} attempts: it may be showing different keys to different people",
                )
            else:
                self.state.pending_gossip.append(pending)

    def _decide(self, pending: PendingGossip) -> bool:
        """Check one head; False when the server kept the check from being made."""
        who = f"user {pending.sender_id[:8]}"
        try:
            theirs = self._verified(pending.head, f"a tree head from {who}")
        except TransparencyError as error:
            self._warn(f"Ignored {error}.")
            return True
        except (VeilError, httpx.HTTPError, ValueError) as error:
            self._warn(
                f"Could not check a tree head from {who} yet ({type(error).__name__}); trying again later."
            )
            return False
        try:
            mine = self.head(fresh=theirs.tree_size > self._stored_size())
            if theirs.tree_size > mine.tree_size:
                raise SplitViewError(
                    f"{SPLIT_VIEW}: {who} saw a log of {theirs.tree_size} entries, the server shows this "
                    f"device only {mine.tree_size}"
                )
            self._advance(theirs)
        except TransparencyError as error:
            # A proof that fails or does not answer the question: the two heads are not shown to be
            # one log, which is what a split view looks like from here.
            self._hold(pending.conversation_id, f"{error} (found in a tree head from {who})")
        except (VeilError, httpx.HTTPError, ValueError) as error:
            self._warn(
                f"Could not check a tree head from {who} yet ({type(error).__name__}); trying again later."
            )
            return False
        return True

    def _hold(self, conversation_id: str, reason: str) -> None:
        self.state.split_views[conversation_id] = reason
        self._warn(self.split_view_notice(conversation_id))

    def _stored_size(self) -> int:
        head = self.state.heads.head
        return -1 if head is None else head.tree_size

    def split_view_notice(self, conversation_id: str) -> str:
        reason = self.state.split_views[canonical_uuid(conversation_id)]
        return (
            f"{reason[:1].upper()}{reason[1:]}. Nothing more is sent to conversation "
            f"{conversation_id[:8]} until you compare safety numbers with its members "
            "(`veil-client verify`) and resume it (`veil-client transparency resume`)."
        )

    def require_sendable(self, conversation_id: str) -> None:
        """SplitViewError if a split view was found in this conversation and not yet resumed (heads
        members sent that are still unchecked are checked first)."""
        cid = canonical_uuid(conversation_id)
        if any(p.conversation_id == cid for p in self.state.pending_gossip):
            self.check_pending_gossip()
        if cid in self.state.split_views:
            raise SplitViewError(self.split_view_notice(cid))

    def resume(self, conversation_id: str) -> bool:
        """The user decided to send to this conversation again; whether it was held."""
        return self.state.split_views.pop(canonical_uuid(conversation_id), None) is not None
