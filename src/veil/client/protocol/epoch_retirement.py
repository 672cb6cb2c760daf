"""When a conversation's older sender-key epochs stop being readable on this device.

A membership change raises the epoch; a removed member still holds the previous epoch's keys, so
messages under an old epoch must stop being accepted, but not at once: messages sent just before
the change may still be in flight. So the first message of epoch E (or later) handled on this
device starts a grace period; when it ends, every epoch below E is retired for good: its receiving
keys are deleted and neither its messages nor new keys for it are accepted again. Time is passed
in (`now`, seconds), never read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from veil.client.protocol.codec import read_int, read_list, read_time


class EpochRetirement:
    """One conversation's retirement clock: a boundary in force and the deadlines still running."""

    def __init__(
        self,
        retired_before: int = 0,
        newest_seen: int | None = None,
        deadlines: list[tuple[int, float]] | None = None,
    ) -> None:
        self.retired_before = retired_before
        self._newest_seen = newest_seen
        # (epoch E, time at which every epoch below E retires), in order of E.
        self._deadlines = sorted(deadlines or [])

    def observe(self, epoch: int, *, now: float, grace: float) -> None:
        """Note a message of `epoch` handled at `now`; the first of a newer epoch starts a grace period."""
        if self._newest_seen is None or epoch > self._newest_seen:
            self._newest_seen = epoch
            self._deadlines.append((epoch, float(now) + grace))

    def advance(self, now: float) -> int:
        """Apply every deadline that has passed at `now`; return the epoch below which all is retired."""
        due = [epoch for epoch, deadline in self._deadlines if deadline <= now]
        if due:
            self.retired_before = max(self.retired_before, *due)
            self._deadlines = [(e, d) for e, d in self._deadlines if d > now]
        return self.retired_before

    def to_state(self) -> dict[str, Any]:
        return {
            "retired_before": self.retired_before,
            "newest_seen": self._newest_seen,
            "deadlines": [{"epoch": epoch, "at": at} for epoch, at in self._deadlines],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EpochRetirement:
        if "newest_seen" not in state:
            raise ValueError("newest_seen is required")
        newest_seen = None if state["newest_seen"] is None else read_int(state, "newest_seen")
        deadlines: list[tuple[int, float]] = []
        for item in read_list(state, "deadlines"):
            if not isinstance(item, Mapping):
                raise ValueError("a retirement deadline must be an object")
            deadlines.append((read_int(item, "epoch"), read_time(item, "at")))
        return cls(read_int(state, "retired_before"), newest_seen, deadlines)
