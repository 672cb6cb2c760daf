"""The client's key-transparency verifier against the server's log: RFC 6962 reference data, proofs
the server's tree makes for random trees (which must verify, and fail for every single-bit change),
signed heads, the leaf encoding, and the rules of the latest head a client keeps.

Tree sizes are bound by the signed head, not by a proof alone (a leaf's audit path can be the same
in trees of neighbouring sizes), so size changes are tested where the client meets them: in a head,
and in a proof that must be for exactly the head's size."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_transparency_tree import (
    REFERENCE_CONSISTENCY,
    REFERENCE_INCLUSION_0_OF_8,
    REFERENCE_LEAVES,
    REFERENCE_ROOTS,
    flipped,
    stored,
)
from veil.client.protocol.codec import b64encode
from veil.client.protocol.identity import MasterKey
from veil.client.protocol.transparency import (
    EMPTY_ROOT,
    ConsistencyProof,
    HeadStore,
    InclusionProof,
    Leaf,
    SignedTreeHead,
    SplitViewError,
    TransparencyError,
    VerifiedTreeHead,
    expected_leaf,
    require_leaf_matches,
    verify_consistency,
    verify_inclusion,
)
from veil.client.protocol.trust import ListedDevice
from veil.transparency import leaf as server_leaf
from veil.transparency import schemas as server_schemas
from veil.transparency import tree
from veil.transparency.head import LogKeys, head_payload

DERANDOMIZED = settings(max_examples=20, deadline=None, derandomize=True)


@pytest.fixture(scope="module")
def log_keys(tmp_path_factory: pytest.TempPathFactory) -> LogKeys:
    path: Path = tmp_path_factory.mktemp("transparency") / "keys.json"
    LogKeys.generate_file(path)
    return LogKeys.load(path)


def signed(keys: LogKeys, size: int, root: bytes, timestamp_ms: int = 1_700_000_000_000) -> SignedTreeHead:
    """A head the server's key signed, as the client receives it."""
    head = keys.sign(size, timestamp_ms, root)
    wire = server_schemas.SignedTreeHead(
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        timestamp=head.timestamp_ms,
        signature=head.signature,
    ).model_dump(mode="json")
    return SignedTreeHead.from_wire(wire)


def verified(keys: LogKeys, leaves: list[bytes], size: int | None = None) -> VerifiedTreeHead:
    size = len(leaves) if size is None else size
    return signed(keys, size, tree.root_of(leaves[:size])).verify(keys.public_key)


def proof_between(leaves: list[bytes], first: int, second: int) -> ConsistencyProof:
    return ConsistencyProof(first, second, tuple(tree.consistency_proof(stored(leaves), first, second)))


def random_leaves(data: st.DataObject, low: int, high: int) -> list[bytes]:
    size = data.draw(st.integers(low, high), label="size")
    return [data.draw(st.binary(max_size=6)) + i.to_bytes(2, "big") for i in range(size)]


# --- RFC 6962 reference tree ----------------------------------------------------------------------


def test_the_reference_tree_proofs_verify() -> None:
    roots = [bytes.fromhex(h) for h in REFERENCE_ROOTS]
    verify_inclusion(
        REFERENCE_LEAVES[0], 0, 8, [bytes.fromhex(h) for h in REFERENCE_INCLUSION_0_OF_8], roots[7]
    )
    for (first, second), proof in REFERENCE_CONSISTENCY.items():
        verify_consistency(
            first, second, roots[first - 1], roots[second - 1], [bytes.fromhex(h) for h in proof]
        )
    read = stored(REFERENCE_LEAVES)
    for size in range(1, 9):
        for index in range(size):
            path = tree.inclusion_path(read, index, size)
            verify_inclusion(REFERENCE_LEAVES[index], index, size, path, roots[size - 1])
        for first in range(size + 1):
            first_root = EMPTY_ROOT if first == 0 else roots[first - 1]
            verify_consistency(
                first, size, first_root, roots[size - 1], tree.consistency_proof(read, first, size)
            )


def test_the_reference_tree_refuses_a_proof_for_another_leaf_or_root() -> None:
    roots = [bytes.fromhex(h) for h in REFERENCE_ROOTS]
    path = [bytes.fromhex(h) for h in REFERENCE_INCLUSION_0_OF_8]
    with pytest.raises(TransparencyError, match="does not lead to the root hash"):
        verify_inclusion(REFERENCE_LEAVES[1], 0, 8, path, roots[7])
    with pytest.raises(TransparencyError, match="leaf index is outside the tree"):
        verify_inclusion(REFERENCE_LEAVES[0], 8, 8, path, roots[7])
    proof = [bytes.fromhex(h) for h in REFERENCE_CONSISTENCY[(6, 8)]]
    with pytest.raises(
        TransparencyError, match="from size 6 to 8: the proof does not lead to the first root"
    ):
        verify_consistency(6, 8, roots[4], roots[7], proof)
    with pytest.raises(TransparencyError, match="two different roots for the same size"):
        verify_consistency(8, 8, roots[7], roots[6], [])
    with pytest.raises(TransparencyError, match="the proof must be empty"):
        verify_consistency(0, 8, EMPTY_ROOT, roots[7], proof)
    with pytest.raises(TransparencyError, match="first root is not the empty tree's"):
        verify_consistency(0, 8, roots[0], roots[7], [])
    with pytest.raises(TransparencyError, match="first size is not from 0 to the second"):
        verify_consistency(8, 6, roots[7], roots[5], proof)
    with pytest.raises(TransparencyError, match="the proof is empty"):
        verify_consistency(6, 8, roots[5], roots[7], [])


def test_a_path_for_a_tree_of_another_size_is_too_short_or_too_long() -> None:
    """The RFC's length checks: with them, a path and root of a smaller (or larger) tree do not
    pass for the claimed size, even though the hashes chain."""
    read = stored(REFERENCE_LEAVES)
    path_in_4, root_of_4 = tree.inclusion_path(read, 0, 4), tree.root(read, 4)
    verify_inclusion(REFERENCE_LEAVES[0], 0, 4, path_in_4, root_of_4)
    with pytest.raises(TransparencyError, match="leaf 0 in the tree of size 8: the audit path is too short"):
        verify_inclusion(REFERENCE_LEAVES[0], 0, 8, path_in_4, root_of_4)
    path_in_8, root_of_8 = tree.inclusion_path(read, 0, 8), tree.root(read, 8)
    with pytest.raises(TransparencyError, match="leaf 0 in the tree of size 4: the audit path is too long"):
        verify_inclusion(REFERENCE_LEAVES[0], 0, 4, path_in_8, root_of_8)
    proof = tree.consistency_proof(read, 2, 4)
    with pytest.raises(TransparencyError, match="from size 2 to 8: the proof is too short"):
        verify_consistency(2, 8, tree.root(read, 2), tree.root(read, 4), proof)
    with pytest.raises(TransparencyError, match="from size 1 to 2: the proof is too long"):
        verify_consistency(1, 2, tree.root(read, 1), root_of_8, tree.consistency_proof(read, 1, 8))


@pytest.mark.parametrize("size", list(range(1, 41)))
def test_every_proof_the_server_makes_verifies(size: int) -> None:
    leaves = log_of(size)
    read = stored(leaves)
    root = tree.root(read, size)
    for index in range(size):
        verify_inclusion(leaves[index], index, size, tree.inclusion_path(read, index, size), root)
    for first in range(size + 1):
        verify_consistency(
            first, size, tree.root(read, first), root, tree.consistency_proof(read, first, size)
        )


# --- server-made proofs of random trees -------------------------------------------------------------


@DERANDOMIZED
@given(st.data())
def test_every_inclusion_proof_of_a_random_tree_verifies_and_every_bit_change_fails(
    data: st.DataObject,
) -> None:
    leaves = random_leaves(data, 1, 150)
    size = len(leaves)
    read = stored(leaves)
    root = tree.root(read, size)
    index = data.draw(st.integers(0, size - 1), label="index")
    path = tree.inclusion_path(read, index, size)
    verify_inclusion(leaves[index], index, size, path, root)

    for changed in flipped(leaves[index]):
        with pytest.raises(TransparencyError, match="does not lead to the root hash"):
            verify_inclusion(changed, index, size, path, root)
    for position, element in enumerate(path):
        for changed in flipped(element):
            bad = [*path[:position], changed, *path[position + 1 :]]
            with pytest.raises(TransparencyError, match="does not lead to the root hash"):
                verify_inclusion(leaves[index], index, size, bad, root)
    for changed in flipped(root):
        with pytest.raises(TransparencyError, match="does not lead to the root hash"):
            verify_inclusion(leaves[index], index, size, path, changed)
    for bit in range(size.bit_length() + 1):
        with pytest.raises(TransparencyError):
            verify_inclusion(leaves[index], index ^ (1 << bit), size, path, root)
    with pytest.raises(TransparencyError):
        verify_inclusion(leaves[index], index, size, [*path, bytes(32)], root)
    if path:
        with pytest.raises(TransparencyError):
            verify_inclusion(leaves[index], index, size, path[:-1], root)


@DERANDOMIZED
@given(st.data())
def test_every_consistency_proof_of_a_random_tree_verifies_and_every_bit_change_fails(
    data: st.DataObject,
) -> None:
    leaves = random_leaves(data, 2, 150)
    size = len(leaves)
    read = stored(leaves)
    root = tree.root(read, size)
    first = data.draw(st.integers(1, size - 1), label="first")
    first_root = tree.root(read, first)
    proof = tree.consistency_proof(read, first, size)
    verify_consistency(first, size, first_root, root, proof)

    for position, element in enumerate(proof):
        for changed in flipped(element):
            bad = [*proof[:position], changed, *proof[position + 1 :]]
            with pytest.raises(TransparencyError):
                verify_consistency(first, size, first_root, root, bad)
    for changed in flipped(first_root):
        with pytest.raises(TransparencyError, match="the proof does not lead to the"):
            verify_consistency(first, size, changed, root, proof)
    for changed in flipped(root):
        with pytest.raises(TransparencyError):
            verify_consistency(first, size, first_root, changed, proof)
    with pytest.raises(TransparencyError):
        verify_consistency(first, size, first_root, root, proof[:-1])
    with pytest.raises(TransparencyError):
        verify_consistency(first, size, first_root, root, [*proof, proof[-1]])


@settings(max_examples=10, deadline=None, derandomize=True)
@given(st.data())
def test_a_changed_size_fails_where_the_head_binds_it(log_keys: LogKeys, data: st.DataObject) -> None:
    size = data.draw(st.integers(2, 100), label="size")
    leaves = [i.to_bytes(104, "big") for i in range(size)]
    head = verified(log_keys, leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = InclusionProof(
        index, leaves[index], size, tuple(tree.inclusion_path(stored(leaves), index, size))
    )
    assert proof.verify(head) == Leaf.decode(leaves[index])
    for bit in range(64):
        moved = SignedTreeHead(size ^ (1 << bit), head.timestamp_ms, head.root_hash, head.signature)
        with pytest.raises(TransparencyError, match="signature does not verify"):
            moved.verify(log_keys.public_key)
        with pytest.raises(TransparencyError, match="not the signed head's"):
            InclusionProof(index, proof.leaf, size ^ (1 << bit), proof.audit_path).verify(head)

    first = data.draw(st.integers(1, size - 1), label="first")
    consistency = proof_between(leaves, first, size)
    for bit in range(64):
        for bad in (
            ConsistencyProof(first ^ (1 << bit), size, consistency.proof),
            ConsistencyProof(first, size ^ (1 << bit), consistency.proof),
        ):
            store = HeadStore(verified(log_keys, leaves, first))
            with pytest.raises(TransparencyError, match="the consistency proof is from size"):
                store.advance(head, bad)
            assert store.head is not None and store.head.tree_size == first


# --- signed heads -------------------------------------------------------------------------------------


def test_a_head_signs_the_contract_bytes_and_any_change_is_refused(log_keys: LogKeys) -> None:
    root = hashlib.sha256(b"root").digest()
    head = signed(log_keys, 5, root, 1_700_000_000_123)
    assert head.signed_bytes() == head_payload(5, 1_700_000_000_123, root)
    assert head.signed_bytes() == (
        b"veil/tree-head/v1" + (5).to_bytes(8, "big") + (1_700_000_000_123).to_bytes(8, "big") + root
    )
    assert head.verify(log_keys.public_key).to_wire() == head.to_wire()
    assert SignedTreeHead.from_wire(head.to_wire()) == head

    for changed in flipped(head.signature):
        with pytest.raises(TransparencyError, match="signature does not verify"):
            SignedTreeHead(5, head.timestamp_ms, root, changed).verify(log_keys.public_key)
    for changed in flipped(root):
        with pytest.raises(TransparencyError, match="signature does not verify"):
            SignedTreeHead(5, head.timestamp_ms, changed, head.signature).verify(log_keys.public_key)
    for bit in range(64):
        with pytest.raises(TransparencyError, match="signature does not verify"):
            SignedTreeHead(5, head.timestamp_ms ^ (1 << bit), root, head.signature).verify(
                log_keys.public_key
            )
    for changed in flipped(log_keys.public_key):
        with pytest.raises(TransparencyError, match="signature does not verify"):
            head.verify(changed)
    with pytest.raises(TransparencyError, match="signature does not verify"):
        head.verify(b"\x01" * 31)


def test_an_empty_head_must_have_the_empty_root(log_keys: LogKeys) -> None:
    assert signed(log_keys, 0, EMPTY_ROOT).verify(log_keys.public_key).tree_size == 0
    with pytest.raises(TransparencyError, match="root is not the empty tree's"):
        signed(log_keys, 0, bytes(32)).verify(log_keys.public_key)


@pytest.mark.parametrize(
    "change",
    [
        {"tree_size": -1},
        {"tree_size": True},
        {"tree_size": "5"},
        {"tree_size": 2**64},
        {"timestamp": 1.5},
        {"root_hash": b64encode(bytes(31))},
        {"root_hash": b64encode(bytes(32)).rstrip("=")},
        {"signature": b64encode(bytes(63))},
        {"extra": 1},
    ],
)
def test_a_malformed_head_is_refused(change: dict[str, object]) -> None:
    wire: dict[str, object] = {
        "tree_size": 5,
        "root_hash": b64encode(bytes(32)),
        "timestamp": 1,
        "signature": b64encode(bytes(64)),
    }
    with pytest.raises(TransparencyError, match="malformed tree head"):
        SignedTreeHead.from_wire({**wire, **change})
    del wire["signature"]
    with pytest.raises(TransparencyError, match="malformed tree head"):
        SignedTreeHead.from_wire(wire)


def test_an_inclusion_proof_from_the_wire_proves_the_users_leaf(log_keys: LogKeys) -> None:
    user = uuid.uuid4()
    master = MasterKey.generate()
    listing = [listed(3, certified=True), listed(1, certified=False)]
    leaf = expected_leaf(str(user), 2, master.public_key, listing).encode()
    leaves = [bytes(104), leaf, b"\x01" * 104]
    head = verified(log_keys, leaves)
    wire = server_schemas.InclusionProof(
        leaf_index=1, leaf=leaf, tree_size=3, audit_path=tree.inclusion_path(stored(leaves), 1, 3)
    ).model_dump(mode="json")
    proven = InclusionProof.from_wire(wire).verify(head)
    assert proven.version == 2
    require_leaf_matches(proven, str(user), master.public_key, listing)
    with pytest.raises(TransparencyError, match="leaf 0 in the tree of size 3: the audit path does not lead"):
        InclusionProof.from_wire({**wire, "leaf_index": 0}).verify(head)
    with pytest.raises(TransparencyError, match="malformed inclusion proof"):
        InclusionProof.from_wire({**wire, "leaf": b64encode(leaf[:-1])})
    with pytest.raises(TransparencyError, match="malformed inclusion proof"):
        InclusionProof.from_wire({**wire, "audit_path": [b64encode(bytes(33))]})
    consistency = ConsistencyProof.from_wire(
        server_schemas.ConsistencyProof(
            first=1, second=3, proof=tree.consistency_proof(stored(leaves), 1, 3)
        ).model_dump(mode="json")
    )
    assert HeadStore(verified(log_keys, leaves, 1)).advance(head, consistency) == head
    with pytest.raises(TransparencyError, match="malformed consistency proof"):
        ConsistencyProof.from_wire({"first": 1, "second": 3, "proof": "x"})


# --- leaves -------------------------------------------------------------------------------------------


def listed(n: int, *, certified: bool) -> ListedDevice:
    return ListedDevice(
        str(uuid.UUID(int=n << 64 | (255 - n))),
        bytes([n]) * 32,
        bytes([n + 1]) * 32,
        bytes([n + 2]) * 64 if certified else None,
    )


def as_server_device(device: ListedDevice) -> server_leaf.CertifiedDevice:
    assert device.certificate is not None
    return server_leaf.CertifiedDevice(
        uuid.UUID(device.device_id), device.identity_key, device.signing_key, device.certificate
    )


DEVICES = st.lists(
    st.builds(
        ListedDevice,
        st.uuids().map(str),
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=32, max_size=32),
        st.one_of(st.none(), st.binary(min_size=64, max_size=64)),
    ),
    max_size=6,
    unique_by=lambda device: device.device_id,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.uuids(),
    st.integers(1, 2**64 - 1),
    st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
    DEVICES,
)
def test_the_leaf_is_byte_identical_to_the_servers(
    user: uuid.UUID, version: int, master_key: bytes | None, listing: list[ListedDevice]
) -> None:
    server = server_leaf.leaf_for(
        user, version, master_key, [as_server_device(d) for d in listing if d.certificate is not None]
    ).encode()
    client = expected_leaf(str(user), version, master_key, listing)
    assert client.encode() == server
    assert expected_leaf(user.bytes, version, master_key, listing) == client
    assert Leaf.decode(server) == client
    require_leaf_matches(Leaf.decode(server), str(user).upper(), master_key, reversed(listing))


def test_a_leaf_that_does_not_match_the_shown_keys_is_refused() -> None:
    user = str(uuid.uuid4())
    master = MasterKey.generate().public_key
    listing = [listed(1, certified=True), listed(2, certified=True), listed(3, certified=False)]
    leaf = expected_leaf(user, 4, master, listing)
    require_leaf_matches(leaf, user, master, listing)
    with pytest.raises(TransparencyError, match="leaf is of another user"):
        require_leaf_matches(leaf, str(uuid.uuid4()), master, listing)
    with pytest.raises(TransparencyError, match="master key the server shows is not the one in the log"):
        require_leaf_matches(leaf, user, MasterKey.generate().public_key, listing)
    with pytest.raises(TransparencyError, match="master key the server shows is not the one in the log"):
        require_leaf_matches(leaf, user, None, listing)
    # A certified device hidden from the listing, or one the log never recorded, is caught.
    with pytest.raises(
        TransparencyError, match="certified devices the server lists are not those in the log"
    ):
        require_leaf_matches(leaf, user, master, listing[1:])
    with pytest.raises(
        TransparencyError, match="certified devices the server lists are not those in the log"
    ):
        require_leaf_matches(leaf, user, master, [*listing, listed(4, certified=True)])
    # A pending (uncertified) device is not logged: listing one more changes nothing.
    require_leaf_matches(leaf, user, master, [*listing, listed(5, certified=False)])
    with pytest.raises(TransparencyError, match="104 bytes"):
        Leaf.decode(leaf.encode()[:-1])


# --- the latest head a client keeps -------------------------------------------------------------------


def log_of(size: int, tag: bytes = b"") -> list[bytes]:
    return [tag + i.to_bytes(4, "big") for i in range(size)]


def test_the_store_advances_only_with_a_consistency_proof(log_keys: LogKeys) -> None:
    leaves = log_of(20)
    store = HeadStore()
    assert store.head is None
    first = store.advance(verified(log_keys, leaves, 7))
    assert store.head == first
    with pytest.raises(TransparencyError, match="a consistency proof from size 7 to 20 is required"):
        store.advance(verified(log_keys, leaves))
    with pytest.raises(TransparencyError, match="consistency proof is from size 6 to 20, not from size 7"):
        store.advance(verified(log_keys, leaves), proof_between(leaves, 6, 20))
    assert store.head == first
    newer = store.advance(verified(log_keys, leaves), proof_between(leaves, 7, 20))
    assert newer.tree_size == 20 and store.head == newer
    # The same head again, or another signature over the same tree, needs no proof.
    assert store.advance(verified(log_keys, leaves, 20)) == newer
    assert store.advance(signed(log_keys, 20, newer.root_hash, 1).verify(log_keys.public_key)) == newer


def test_a_fork_of_the_same_size_is_detected(log_keys: LogKeys) -> None:
    """A server double that forks the log: Alice and Bob each get a signed head of size 12 with a
    different root; the first head Bob gossips to Alice gives the fork away."""
    honest, forked = log_of(12), [*log_of(11), b"a master key only Bob is shown"]
    alice, bob = HeadStore(verified(log_keys, honest)), HeadStore(verified(log_keys, forked))
    gossiped = SignedTreeHead.from_wire(bob.to_state()["head"]).verify(log_keys.public_key)
    with pytest.raises(
        SplitViewError,
        match="the server is showing different keys to different people: two signed heads of size 12",
    ):
        alice.advance(gossiped)
    assert alice.head is not None and alice.head.root_hash == tree.root_of(honest)


def test_a_fork_of_another_size_has_no_consistency_proof(log_keys: LogKeys) -> None:
    honest, forked = log_of(12), [*log_of(11), b"x", *log_of(5, b"y")]
    alice = HeadStore(verified(log_keys, honest))
    # The forked log's own proof (the only one the server can make for that head) does not hold.
    with pytest.raises(SplitViewError, match=r"showing different keys.*head of size 17 does not extend"):
        alice.advance(verified(log_keys, forked), proof_between(forked, 12, 17))


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda leaves: [*leaves[:3], b"rewritten", *leaves[4:]], id="a leaf rewritten"),
        pytest.param(lambda leaves: [*leaves[:3], *leaves[4:], b"padding"], id="a leaf removed"),
    ],
)
def test_a_rewritten_history_fails_the_consistency_check_of_a_client_that_saw_it(
    log_keys: LogKeys, rewrite: Callable[[list[bytes]], list[bytes]]
) -> None:
    seen = log_of(10)
    store = HeadStore(verified(log_keys, seen))
    rewritten = [*rewrite(seen), *log_of(6, b"later")]
    with pytest.raises(SplitViewError, match="head of size 16 does not extend the head of size 10"):
        store.advance(verified(log_keys, rewritten), proof_between(rewritten, 10, 16))
    assert store.head is not None and store.head.tree_size == 10


def test_an_older_head_is_checked_never_rolled_back_to(log_keys: LogKeys) -> None:
    leaves = log_of(30)
    store = HeadStore(verified(log_keys, leaves))
    older = verified(log_keys, leaves, 9)
    with pytest.raises(TransparencyError, match="a consistency proof from size 9 to 30 is required"):
        store.advance(older)
    assert store.advance(older, proof_between(leaves, 9, 30)).tree_size == 30
    assert store.head is not None and store.head.tree_size == 30
    with pytest.raises(SplitViewError):
        store.advance(verified(log_keys, log_of(9, b"other")), proof_between(leaves, 9, 30))


def test_the_store_state_round_trips_and_refuses_anything_else(log_keys: LogKeys) -> None:
    assert HeadStore.from_state(HeadStore().to_state()).head is None
    store = HeadStore(verified(log_keys, log_of(5)))
    again = HeadStore.from_state(store.to_state())
    assert again.head == store.head and isinstance(again.head, VerifiedTreeHead)
    state = store.to_state()
    for bad in (
        {**state, "version": 2},
        {**state, "version": True},
        {**state, "extra": 1},
        {"version": 1},
        {**state, "head": {**state["head"], "tree_size": -1}},
        {**state, "head": "head"},
    ):
        with pytest.raises(ValueError, match=r"head store|malformed tree head"):
            HeadStore.from_state(bad)
