"""The key-transparency tree against RFC 6962/9162: the reference tree of the RFC 6962 test data
(certificate-transparency's merkle tree tests), an independent recursive implementation of the
RFC's definitions, and proofs that must fail for every single-bit change."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.transparency import tree
from veil.transparency.head import LogKeys, head_payload, verify_head
from veil.transparency.leaf import LEAF_SIZE, CertifiedDevice, Leaf, devices_hash, leaf_for, user_hash

# The eight leaves of the reference tree and the roots of its first 1..8 leaves.
REFERENCE_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
REFERENCE_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
REFERENCE_INCLUSION_0_OF_8 = [
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
]
REFERENCE_CONSISTENCY = {
    (1, 8): REFERENCE_INCLUSION_0_OF_8,
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


# --- an independent, literal reading of RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1 ----------------------


def mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


# --- the stored-node implementation --------------------------------------------------------------


def stored(leaves: list[bytes]) -> tree.NodeReader:
    """Every perfect subtree's hash, as the database keeps them."""
    nodes: dict[tree.Node, bytes] = {}
    compact = tree.CompactRange()
    for leaf in leaves:
        nodes.update(compact.push(leaf))
    return tree.reader(nodes)


def leaves_of(size: int) -> list[bytes]:
    return [i.to_bytes(4, "big") * (i % 3 + 1) for i in range(size)]


def test_the_reference_tree_of_rfc_6962() -> None:
    read = stored(REFERENCE_LEAVES)
    assert tree.root(read, 0).hex() == hashlib.sha256(b"").hexdigest()
    for size, expected in enumerate(REFERENCE_ROOTS, start=1):
        assert tree.root(read, size).hex() == expected
        assert tree.root_of(REFERENCE_LEAVES[:size]).hex() == expected
        assert mth(REFERENCE_LEAVES[:size]).hex() == expected
    assert [h.hex() for h in tree.inclusion_path(read, 0, 8)] == REFERENCE_INCLUSION_0_OF_8
    for (first, second), proof in REFERENCE_CONSISTENCY.items():
        assert [h.hex() for h in tree.consistency_proof(read, first, second)] == proof
        tree.verify_consistency(
            first,
            second,
            bytes.fromhex(REFERENCE_ROOTS[first - 1]),
            bytes.fromhex(REFERENCE_ROOTS[second - 1]),
            [bytes.fromhex(h) for h in proof],
        )


@pytest.mark.parametrize("size", list(range(1, 34)))
def test_proofs_match_the_rfc_definitions_and_verify(size: int) -> None:
    leaves = leaves_of(size)
    read = stored(leaves)
    root = tree.root(read, size)
    assert root == mth(leaves)
    for index in range(size):
        audit = tree.inclusion_path(read, index, size)
        assert audit == path(index, leaves)
        tree.verify_inclusion(leaves[index], index, size, audit, root)
    for first in range(0, size + 1):
        proof = tree.consistency_proof(read, first, size)
        assert proof == ([] if first in (0, size) else subproof(first, leaves, True))
        tree.verify_consistency(first, size, mth(leaves[:first]), root, proof)


def flipped(data: bytes) -> list[bytes]:
    """Every one-bit change of `data`."""
    return [
        data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :] for i in range(len(data)) for bit in range(8)
    ]


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_every_single_bit_change_breaks_a_proof(data: st.DataObject) -> None:
    size = data.draw(st.integers(2, 200), label="size")
    leaves = [data.draw(st.binary(min_size=0, max_size=8)) + i.to_bytes(2, "big") for i in range(size)]
    read = stored(leaves)
    root = tree.root(read, size)

    index = data.draw(st.integers(0, size - 1), label="index")
    audit = tree.inclusion_path(read, index, size)
    for position, element in enumerate(audit):
        for changed in flipped(element):
            bad = [*audit[:position], changed, *audit[position + 1 :]]
            with pytest.raises(tree.ProofError):
                tree.verify_inclusion(leaves[index], index, size, bad, root)
    for changed in flipped(root):
        with pytest.raises(tree.ProofError):
            tree.verify_inclusion(leaves[index], index, size, audit, changed)
    for changed in flipped(leaves[index]):
        with pytest.raises(tree.ProofError):
            tree.verify_inclusion(changed, index, size, audit, root)
    # The sibling's position instead (the size is bound to the root by the signed head).
    if index ^ 1 < size:
        with pytest.raises(tree.ProofError):
            tree.verify_inclusion(leaves[index], index ^ 1, size, audit, root)
    with pytest.raises(tree.ProofError):
        tree.verify_inclusion(leaves[index], index, size, audit[:-1], root)
    with pytest.raises(tree.ProofError):
        tree.verify_inclusion(leaves[index], index, size, [*audit, audit[-1]], root)

    first = data.draw(st.integers(1, size - 1), label="first")
    first_root = tree.root(read, first)
    proof = tree.consistency_proof(read, first, size)
    for position, element in enumerate(proof):
        for changed in flipped(element):
            bad = [*proof[:position], changed, *proof[position + 1 :]]
            with pytest.raises(tree.ProofError):
                tree.verify_consistency(first, size, first_root, root, bad)
    for changed in flipped(first_root):
        with pytest.raises(tree.ProofError):
            tree.verify_consistency(first, size, changed, root, proof)
    for changed in flipped(root):
        with pytest.raises(tree.ProofError):
            tree.verify_consistency(first, size, first_root, changed, proof)
    with pytest.raises(tree.ProofError):
        tree.verify_consistency(first, size, first_root, root, proof[:-1])
    with pytest.raises(tree.ProofError):
        tree.verify_consistency(first, size, first_root, root, [*proof, proof[-1]])


def test_two_roots_for_one_size_are_inconsistent() -> None:
    a, b = tree.root_of([b"a", b"b"]), tree.root_of([b"a", b"c"])
    with pytest.raises(tree.ProofError, match="two different roots"):
        tree.verify_consistency(2, 2, a, b, [])


def test_proofs_read_logarithmically_many_stored_nodes() -> None:
    size = 1_000_000
    for index in (0, 1, 524_287, 524_288, 999_999):
        wanted = tree.nodes_for(lambda read, i=index: tree.inclusion_path(read, i, size))
        assert len(wanted) <= 2 * size.bit_length()
    for first in (1, 3, 524_288, 777_777, 999_999):
        wanted = tree.nodes_for(lambda read, f=first: tree.consistency_proof(read, f, size))
        assert len(wanted) <= 2 * size.bit_length()
    assert len(tree.nodes_for(lambda read: tree.root(read, size))) <= size.bit_count()


# --- leaves and heads ------------------------------------------------------------------------------

USER = uuid.UUID("0193a3c4-5b6e-7f00-8000-0000000000aa")


def device(n: int) -> CertifiedDevice:
    return CertifiedDevice(uuid.UUID(int=n), bytes([n]) * 32, bytes([n + 1]) * 32, bytes([n + 2]) * 64)


def test_the_leaf_encoding() -> None:
    master = bytes(range(32))
    leaf = leaf_for(USER, 3, master, [device(9), device(2)]).encode()
    assert len(leaf) == LEAF_SIZE
    assert leaf[:32] == hashlib.sha256(b"veil/transparency/user/v1" + USER.bytes).digest() == user_hash(USER)
    assert leaf[32:40] == (3).to_bytes(8, "big")
    assert leaf[40:72] == master
    ordered = b"".join(
        d.device_id.bytes + d.identity_key + d.signing_key + d.certificate for d in (device(2), device(9))
    )
    assert leaf[72:] == hashlib.sha256(ordered).digest() == devices_hash([device(2), device(9)])
    assert Leaf.decode(leaf).is_of(USER) and Leaf.decode(leaf).version == 3
    gone = leaf_for(USER, 4, None, []).encode()
    assert gone[40:72] == bytes(32) and gone[72:] == hashlib.sha256(b"").digest()
    with pytest.raises(ValueError, match="104 bytes"):
        Leaf.decode(leaf[:-1])


def test_heads_sign_the_contract_bytes_and_rotation_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    LogKeys.generate_file(path)
    first = LogKeys.load(path)
    head = first.sign(5, 1_700_000_000_123, bytes(range(32)))
    assert head_payload(5, 1_700_000_000_123, bytes(range(32))) == (
        b"veil/tree-head/v1"
        + (5).to_bytes(8, "big")
        + (1_700_000_000_123).to_bytes(8, "big")
        + bytes(range(32))
    )
    assert verify_head(head, first.public_key)
    LogKeys.generate_file(path, previous=path)
    second = LogKeys.load(path)
    assert second.public_key != first.public_key
    assert second.public_keys == [second.public_key, first.public_key]
    assert verify_head(head, second.public_keys[1])
    assert not verify_head(head, second.public_key)
    document = json.loads(path.read_text())
    assert [("private_key" in entry) for entry in document["keys"]] == [False, True]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_key_file_that_does_not_hold_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    LogKeys.generate_file(path)
    document = json.loads(path.read_text())
    document["keys"][0]["public_key"] = document["keys"][0]["public_key"][::-1]
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"transparency key file|does not match"):
        LogKeys.load(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"transparency key file|does not match"):
        LogKeys.load(path)
