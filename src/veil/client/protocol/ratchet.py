"""Symmetric hash ratchets: one chain per direction of a pairwise session, one per group sender key.

A chain key CK yields the message key for the current index and the next chain key:

    MK_i     = HMAC-SHA256(CK_i, 0x01)
    CK_{i+1} = HMAC-SHA256(CK_i, 0x02)

and CK_i is then forgotten. HMAC is one-way, so a thief who later learns CK_j cannot compute any
MK_i with i < j: forward secrecy within a chain. There is no Diffie-Hellman step, so the converse
does not hold: whoever learns CK_j can compute every later key (no post-compromise security).

A receiving chain accepts messages out of order: keys for skipped indices are kept in a bounded
cache, each deleted when used, so a second delivery of any message finds no key (a replay).
State is only advanced after a message authenticates, so a forged message changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.client.protocol.codec import U32_MAX, b64decode, b64encode, read_bytes, read_int, read_list
from veil.client.protocol.errors import ReplayError, TooManySkippedError

CHAIN_KEY_SIZE = 32
# The furthest ahead of the next expected index a single message may be.
MAX_SKIP = 1000
# How many skipped message keys a receiving chain keeps; the oldest are dropped beyond this.
MAX_SKIPPED_KEYS = 1000

_MESSAGE_KEY_INPUT = b"\x01"
_CHAIN_KEY_INPUT = b"\x02"
_INITIATOR_LABEL = b"veil/session/initiator-chain/v1"
_RESPONDER_LABEL = b"veil/session/responder-chain/v1"

T = TypeVar("T")


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def step(chain_key: bytes) -> tuple[bytes, bytes]:
    """One ratchet step: `(message key, next chain key)`."""
    return _hmac(chain_key, _MESSAGE_KEY_INPUT), _hmac(chain_key, _CHAIN_KEY_INPUT)


def derive_session_chains(
    secret: bytes, initiator_identity: bytes, responder_identity: bytes
) -> tuple[bytes, bytes]:
    """The initiator-to-responder and responder-to-initiator chain keys of a new session.

    Distinct labels keep the two directions independent; both identity keys go into the info so
    the session is bound to the pair of devices that agreed on it.
    """

    def expand(label: bytes) -> bytes:
        info = label + initiator_identity + responder_identity
        return HKDF(algorithm=hashes.SHA256(), length=CHAIN_KEY_SIZE, salt=None, info=info).derive(secret)

    return expand(_INITIATOR_LABEL), expand(_RESPONDER_LABEL)


class SendingChain:
    """The sender's side: hands out each index's message key exactly once."""

    def __init__(self, chain_key: bytes, index: int = 0) -> None:
        if len(chain_key) != CHAIN_KEY_SIZE:
            raise ValueError("chain key must be 32 bytes")
        self._chain_key = chain_key
        self._index = index

    @property
    def index(self) -> int:
        """The index the next message will use."""
        return self._index

    @property
    def chain_key(self) -> bytes:
        """The current chain key (for handing a sender key to a receiver)."""
        return self._chain_key

    def next_message_key(self) -> tuple[int, bytes]:
        """`(index, message key)` for the next message; the chain moves past it for good."""
        if self._index > U32_MAX:
            raise OverflowError("chain exhausted: start a new session or sender key")
        message_key, self._chain_key = step(self._chain_key)
        index, self._index = self._index, self._index + 1
        return index, message_key

    def to_state(self) -> dict[str, Any]:
        return {"chain_key": b64encode(self._chain_key), "index": self._index}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SendingChain:
        return cls(read_bytes(state, "chain_key", size=CHAIN_KEY_SIZE), read_int(state, "index"))


class ReceivingChain:
    """The receiver's side: derives keys up to any index within reach, keeping skipped ones briefly."""

    def __init__(
        self, chain_key: bytes, next_index: int = 0, skipped: dict[int, bytes] | None = None
    ) -> None:
        if len(chain_key) != CHAIN_KEY_SIZE:
            raise ValueError("chain key must be 32 bytes")
        self._chain_key = chain_key
        self._next_index = next_index
        # Insertion order is index order, so the first entries are the oldest.
        self._skipped: dict[int, bytes] = dict(sorted((skipped or {}).items()))

    @property
    def next_index(self) -> int:
        """The lowest index never derived yet."""
        return self._next_index

    @property
    def skipped_count(self) -> int:
        """How many skipped message keys are held."""
        return len(self._skipped)

    def open(self, index: int, open_with: Callable[[bytes], T]) -> T:
        """Decrypt message `index` with `open_with(message_key)`, committing state only if it succeeds.

        `open_with` must raise when the message does not authenticate; the chain is then untouched.
        """
        if index in self._skipped:
            result = open_with(self._skipped[index])
            del self._skipped[index]
            return result
        if index < self._next_index:
            raise ReplayError(f"message {index} was already received (or its skipped key was dropped)")
        if index - self._next_index > MAX_SKIP:
            raise TooManySkippedError(f"message {index} is more than {MAX_SKIP} ahead of {self._next_index}")
        chain_key = self._chain_key
        new_skipped: list[tuple[int, bytes]] = []
        for skipped_index in range(self._next_index, index):
            message_key, chain_key = step(chain_key)
            new_skipped.append((skipped_index, message_key))
        message_key, chain_key = step(chain_key)
        result = open_with(message_key)
        self._chain_key, self._next_index = chain_key, index + 1
        self._skipped.update(new_skipped)
        for oldest in list(self._skipped)[: max(0, len(self._skipped) - MAX_SKIPPED_KEYS)]:
            del self._skipped[oldest]
        return result

    def to_state(self) -> dict[str, Any]:
        return {
            "chain_key": b64encode(self._chain_key),
            "next_index": self._next_index,
            "skipped": [{"index": index, "key": b64encode(key)} for index, key in self._skipped.items()],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ReceivingChain:
        skipped: dict[int, bytes] = {}
        for item in read_list(state, "skipped"):
            if not isinstance(item, Mapping):
                raise ValueError("a skipped key entry must be an object")
            skipped[read_int(item, "index")] = b64decode(item.get("key"), size=CHAIN_KEY_SIZE, field="key")
        return cls(
            read_bytes(state, "chain_key", size=CHAIN_KEY_SIZE), read_int(state, "next_index"), skipped
        )
