"""Symmetric hash ratchets: the chain of a group sender key (pairwise sessions use `double_ratchet`).

A chain key CK yields the message key for the current index and the next chain key:

    MK_i     = HMAC-SHA256(CK_i, 0x01)
    CK_{i+1} = HMAC-SHA256(CK_i, 0x02)

and CK_i is then forgotten. HMAC is one-way, so a thief who later learns CK_j cannot compute any
MK_i with i < j: forward secrecy within a chain. There is no Diffie-Hellman step, so the converse
does not hold: whoever learns CK_j can compute every later key (no post-compromise security).

A receiving chain accepts messages out of order: keys for skipped indices are kept in a cache,
each deleted when used, so a second delivery of any message finds no key (a replay). As the Double
Ratchet specification advises, the cache is bounded by count (`MAX_SKIPPED_KEYS` per chain, oldest
dropped) and by age (`SKIPPED_MAX_AGE` from when a key was skipped): a skipped key is a message key
kept on disk, and keeping it forever would undo forward secrecy for that message. Time is passed in
(`now`, seconds); a key skipped without a time (`now=None`) ages only once a time is known.
State is only advanced after a message authenticates, so a forged message changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes, hmac

from veil.client.protocol.codec import (
    U32_MAX,
    b64decode,
    b64encode,
    read_bytes,
    read_int,
    read_list,
    read_optional_time,
)
from veil.client.protocol.errors import ReplayError, TooManySkippedError

CHAIN_KEY_SIZE = 32
# Skipped-key bounds, shared with `double_ratchet` (one definition for both kinds of session).
# The most message keys a single message may make its receiver derive ahead.
MAX_SKIP = 1000
# How many skipped message keys a receiving chain (or a pairwise session) keeps; the oldest go first.
MAX_SKIPPED_KEYS = 1000
# How long (seconds) a skipped message key is kept after it was skipped.
SKIPPED_MAX_AGE = 7 * 24 * 3600.0

_MESSAGE_KEY_INPUT = b"\x01"
_CHAIN_KEY_INPUT = b"\x02"

T = TypeVar("T")


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def step(chain_key: bytes) -> tuple[bytes, bytes]:
    """One ratchet step: `(message key, next chain key)`; also the Double Ratchet's chain step."""
    return _hmac(chain_key, _MESSAGE_KEY_INPUT), _hmac(chain_key, _CHAIN_KEY_INPUT)


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
        self,
        chain_key: bytes,
        next_index: int = 0,
        skipped: dict[int, tuple[bytes, float | None]] | None = None,
    ) -> None:
        if len(chain_key) != CHAIN_KEY_SIZE:
            raise ValueError("chain key must be 32 bytes")
        self._chain_key = chain_key
        self._next_index = next_index
        # index -> (message key, when it was skipped). Insertion order is index order, which is
        # also skip-time order: keys are only ever skipped above every index skipped before.
        self._skipped: dict[int, tuple[bytes, float | None]] = dict(sorted((skipped or {}).items()))

    @property
    def next_index(self) -> int:
        """The lowest index never derived yet."""
        return self._next_index

    @property
    def skipped_count(self) -> int:
        """How many skipped message keys are held."""
        return len(self._skipped)

    def open(self, index: int, open_with: Callable[[bytes], T], *, now: float | None = None) -> T:
        """Decrypt message `index` with `open_with(message_key)`, committing state only if it succeeds.

        `open_with` must raise when the message does not authenticate; the chain is then untouched.
        Skipped keys older than `SKIPPED_MAX_AGE` at `now` are dropped first (none if `now` is None).
        """
        stamp = None if now is None else float(now)
        if stamp is not None:
            self.expire(stamp)
        if index in self._skipped:
            result = open_with(self._skipped[index][0])
            del self._skipped[index]
            return result
        if index < self._next_index:
            raise ReplayError(f"message {index} was already received (or its skipped key was dropped)")
        if index - self._next_index > MAX_SKIP:
            raise TooManySkippedError(f"message {index} is more than {MAX_SKIP} ahead of {self._next_index}")
        chain_key = self._chain_key
        new_skipped: list[tuple[int, tuple[bytes, float | None]]] = []
        for skipped_index in range(self._next_index, index):
            message_key, chain_key = step(chain_key)
            new_skipped.append((skipped_index, (message_key, stamp)))
        message_key, chain_key = step(chain_key)
        result = open_with(message_key)
        self._chain_key, self._next_index = chain_key, index + 1
        self._skipped.update(new_skipped)
        for oldest in list(self._skipped)[: max(0, len(self._skipped) - MAX_SKIPPED_KEYS)]:
            del self._skipped[oldest]
        return result

    def expire(self, now: float) -> None:
        """Drop skipped keys older than `SKIPPED_MAX_AGE`; keys skipped at an unknown time start aging now."""
        for index, (key, skipped_at) in list(self._skipped.items()):
            if skipped_at is None:
                self._skipped[index] = (key, float(now))
            elif now - skipped_at >= SKIPPED_MAX_AGE:
                del self._skipped[index]

    def to_state(self) -> dict[str, Any]:
        return {
            "chain_key": b64encode(self._chain_key),
            "next_index": self._next_index,
            "skipped": [
                {"index": index, "key": b64encode(key), "skipped_at": skipped_at}
                for index, (key, skipped_at) in self._skipped.items()
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ReceivingChain:
        skipped: dict[int, tuple[bytes, float | None]] = {}
        for item in read_list(state, "skipped"):
            if not isinstance(item, Mapping):
                raise ValueError("a skipped key entry must be an object")
            key = b64decode(item.get("key"), size=CHAIN_KEY_SIZE, field="key")
            skipped[read_int(item, "index")] = (key, read_optional_time(item, "skipped_at"))
        return cls(
            read_bytes(state, "chain_key", size=CHAIN_KEY_SIZE), read_int(state, "next_index"), skipped
        )
