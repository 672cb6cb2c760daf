"""The meta keys that open groups' names (protocol/group_meta.py), as one device keeps them.

A meta key travels like a sender key: over the pairwise sessions, to every approved device of the
group's verified roster, from any member whose device holds it, whenever that device hands out its
sender key. A received key waits here until the conversation's membership record shows that its
sender is a joined member (the same check a sender key passes); the first key that passes and opens
the group's `encrypted_meta` is kept. The server never sees a name, only `encrypted_meta`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from veil.client.protocol.codec import b64decode, b64encode, canonical_uuid
from veil.client.protocol.errors import CryptoError
from veil.client.protocol.group_meta import META_KEY_SIZE, MetaKeyPayload, open_meta
from veil.client.sdk.models import Conversation

# Anyone can send this device session messages: each sender device holds only a few places.
_MAX_PENDING = 500
_PENDING_PER_DEVICE = 20


class GroupMetaKeys:
    """Held meta keys by conversation, keys received but not yet checked, and the devices this
    device has handed each key to (so a key goes to each device once)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._pending: list[tuple[str, str, MetaKeyPayload]] = []
        self._served: dict[str, set[str]] = {}

    def key(self, conversation_id: str) -> bytes | None:
        return self._keys.get(canonical_uuid(conversation_id))

    def keep(self, conversation_id: str, key: bytes) -> None:
        self._keys[canonical_uuid(conversation_id)] = key

    def hold(self, sender_id: str, sender_device_id: str, payload: MetaKeyPayload) -> None:
        """Keep a received key until its sender's membership is checked; a flood from one device
        pushes out its own oldest entries only."""
        mine = [i for i, entry in enumerate(self._pending) if entry[:2] == (sender_id, sender_device_id)]
        if len(mine) >= _PENDING_PER_DEVICE:
            del self._pending[mine[0]]
        if len(self._pending) < _MAX_PENDING:
            self._pending.append((sender_id, sender_device_id, payload))

    def has_pending(self, conversation_id: str) -> bool:
        cid = canonical_uuid(conversation_id)
        return any(payload.conversation_id == cid for _, _, payload in self._pending)

    def take_pending(self, conversation_id: str) -> list[tuple[str, str, MetaKeyPayload]]:
        """Remove and return the keys received for the conversation (the caller holds back any
        it cannot judge yet with `hold`)."""
        cid = canonical_uuid(conversation_id)
        taken = [entry for entry in self._pending if entry[2].conversation_id == cid]
        self._pending = [entry for entry in self._pending if entry[2].conversation_id != cid]
        return taken

    def not_served(self, conversation_id: str, device_ids: list[str]) -> list[str]:
        served = self._served.get(canonical_uuid(conversation_id), set())
        return [d for d in device_ids if d not in served]

    def served(self, conversation_id: str, device_ids: list[str]) -> None:
        self._served.setdefault(canonical_uuid(conversation_id), set()).update(device_ids)

    def forget(self, conversation_id: str) -> None:
        cid = canonical_uuid(conversation_id)
        self._keys.pop(cid, None)
        self._served.pop(cid, None)
        self.take_pending(cid)

    def named(self, conversation: Conversation) -> Conversation:
        """The conversation with its name and description, if the held key opens its meta."""
        key = self._keys.get(conversation.conversation_id)
        if key is None or conversation.encrypted_meta is None:
            return conversation
        try:
            meta = open_meta(key, conversation.encrypted_meta)
        except CryptoError:
            return conversation
        return dataclasses.replace(conversation, name=meta.name, description=meta.description)

    def to_state(self) -> dict[str, Any]:
        return {
            "keys": {cid: b64encode(key) for cid, key in self._keys.items()},
            "pending": [
                {"sender_id": s, "sender_device_id": d, "payload": b64encode(p.encode())}
                for s, d, p in self._pending
            ],
            "served": {cid: sorted(devices) for cid, devices in self._served.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> GroupMetaKeys:
        """Rebuild from `to_state` output (None: a keystore written before group names)."""
        keys = cls()
        if state is None:
            return keys
        keys._keys = {
            canonical_uuid(str(cid)): b64decode(key, size=META_KEY_SIZE, field="meta key")
            for cid, key in dict(state["keys"]).items()
        }
        keys._pending = [
            (
                canonical_uuid(str(item["sender_id"])),
                canonical_uuid(str(item["sender_device_id"])),
                MetaKeyPayload.decode(b64decode(item["payload"], field="payload")),
            )
            for item in state["pending"]
        ]
        keys._served = {
            canonical_uuid(str(cid)): {str(d) for d in devices}
            for cid, devices in dict(state["served"]).items()
        }
        return keys
