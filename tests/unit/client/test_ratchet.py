"""Hash ratchet: keys agree in any order, each is usable once, old keys cannot be re-derived."""

from __future__ import annotations

import os
import random

import pytest

from veil.client.protocol.codec import b64encode
from veil.client.protocol.errors import DecryptionError, ReplayError, TooManySkippedError
from veil.client.protocol.ratchet import (
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    SKIPPED_MAX_AGE,
    ReceivingChain,
    SendingChain,
    step,
)


def _echo(key: bytes) -> bytes:
    return key


def _fail(_key: bytes) -> bytes:
    raise DecryptionError("forged")


def test_receiver_derives_the_senders_keys_in_any_order() -> None:
    root = os.urandom(32)
    sender, receiver = SendingChain(root), ReceivingChain(root)
    sent = dict(sender.next_message_key() for _ in range(50))
    order = list(sent)
    random.Random(7).shuffle(order)
    for index in order:
        assert receiver.open(index, _echo) == sent[index]
    assert receiver.skipped_count == 0


def test_every_key_opens_once_only() -> None:
    root = os.urandom(32)
    sender, receiver = SendingChain(root), ReceivingChain(root)
    for _ in range(3):
        sender.next_message_key()
    receiver.open(2, _echo)  # 0 and 1 become skipped keys
    receiver.open(0, _echo)
    for index in (0, 2):
        with pytest.raises(ReplayError):
            receiver.open(index, _echo)
    receiver.open(1, _echo)
    with pytest.raises(ReplayError):
        receiver.open(1, _echo)


def test_a_message_that_fails_to_open_changes_nothing() -> None:
    root = os.urandom(32)
    receiver = ReceivingChain(root)
    before = receiver.to_state()
    with pytest.raises(DecryptionError):
        receiver.open(5, _fail)
    assert receiver.to_state() == before
    assert receiver.open(0, _echo) == step(root)[0]


def test_jumps_beyond_the_bound_are_refused_and_the_cache_is_bounded() -> None:
    receiver = ReceivingChain(os.urandom(32))
    with pytest.raises(TooManySkippedError):
        receiver.open(MAX_SKIP + 1, _echo)
    receiver.open(MAX_SKIP, _echo)
    receiver.open(2 * MAX_SKIP + 1, _echo)
    assert receiver.skipped_count == MAX_SKIPPED_KEYS
    with pytest.raises(ReplayError):  # the oldest skipped keys were dropped
        receiver.open(0, _echo)


def test_forward_secrecy_a_later_chain_key_cannot_reproduce_used_message_keys() -> None:
    sender = SendingChain(os.urandom(32))
    used = [sender.next_message_key()[1] for _ in range(5)]
    # What a thief finds after five messages: the current chain key and nothing else.
    stolen = sender.to_state()
    chain_key = SendingChain.from_state(stolen).chain_key
    assert chain_key not in used
    future: list[bytes] = []
    for _ in range(200):
        message_key, chain_key = step(chain_key)
        future += [message_key, chain_key]
    assert not set(used) & set(future)


def test_forward_secrecy_on_the_receiving_side_deleted_keys_are_gone() -> None:
    root = os.urandom(32)
    sender, receiver = SendingChain(root), ReceivingChain(root)
    keys = [sender.next_message_key()[1] for _ in range(4)]
    receiver.open(3, _echo)
    receiver.open(1, _echo)
    state = repr(ReceivingChain.from_state(receiver.to_state()).to_state())
    assert b64encode(keys[1]) not in state and b64encode(keys[3]) not in state  # used: deleted
    assert b64encode(keys[0]) in state and b64encode(keys[2]) in state  # skipped: still waiting
    assert b64encode(root) not in state


def test_skipped_keys_expire_by_age_from_when_they_were_skipped() -> None:
    root = os.urandom(32)
    receiver = ReceivingChain(root)
    receiver.open(2, _echo, now=1000.0)  # 0 and 1 skipped at t=1000
    receiver.open(5, _echo, now=2000.0)  # 3 and 4 skipped at t=2000
    assert receiver.open(0, _echo, now=1000.0 + SKIPPED_MAX_AGE - 1) == step(root)[0]
    with pytest.raises(ReplayError):  # 1 was skipped SKIPPED_MAX_AGE ago: dropped before opening
        receiver.open(1, _echo, now=1000.0 + SKIPPED_MAX_AGE)
    assert receiver.skipped_count == 2  # 3 and 4 are younger
    receiver.expire(2000.0 + SKIPPED_MAX_AGE)
    assert receiver.skipped_count == 0


def test_keys_skipped_at_an_unknown_time_start_aging_when_a_time_is_known() -> None:
    receiver = ReceivingChain(os.urandom(32))
    receiver.open(3, _echo)  # no time given (a caller without a clock)
    receiver.expire(5000.0)
    assert receiver.skipped_count == 3  # not dropped: their age starts now
    restored = ReceivingChain.from_state(receiver.to_state())
    restored.expire(5000.0 + SKIPPED_MAX_AGE)
    assert restored.skipped_count == 0


@pytest.mark.parametrize("skipped_at", ["soon", True, float("nan"), float("inf"), "missing"])
def test_skipped_key_times_are_read_strictly(skipped_at: object) -> None:
    receiver = ReceivingChain(os.urandom(32))
    receiver.open(1, _echo, now=10.0)
    state = receiver.to_state()
    (entry,) = state["skipped"]
    assert entry["skipped_at"] == 10.0
    if skipped_at == "missing":
        del entry["skipped_at"]
    else:
        entry["skipped_at"] = skipped_at
    with pytest.raises(ValueError, match="skipped_at"):
        ReceivingChain.from_state(state)
