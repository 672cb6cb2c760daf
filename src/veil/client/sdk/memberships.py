"""Who is in a conversation, as its members' signed commits say, not as the server says.

For each conversation this device keeps a `MembershipView` (protocol/membership.py): the chain of
membership events verified from the conversation's creation, extended with the new events of
`GET …/events` whenever the device needs the roster (before it hands out or installs a sender key,
and before it reads messages). A chain that does not verify is a `TrustError`, and the last good
view stays: the device sends that conversation nothing until the server serves a chain that checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from veil.client.protocol.codec import canonical_uuid
from veil.client.protocol.errors import MembershipError
from veil.client.protocol.membership import MembershipView
from veil.client.sdk.models import Conversation, TrustError

Call = Callable[..., httpx.Response]
MasterKeyOf = Callable[[str], bytes | None]
_PAGE = 200


class Memberships:
    """The verified membership view of every conversation this device takes part in."""

    def __init__(self, call: Call, me: str, views: dict[str, MembershipView] | None = None) -> None:
        self._call = call
        self._me = me
        self._views = views or {}

    def view(self, conversation: Conversation, master_key_of: MasterKeyOf) -> MembershipView:
        """The view brought up to date with the server's events; it must end at the epoch the
        server reports for the conversation (the caller refetches the conversation once if not)."""
        cid = conversation.conversation_id
        view = self._views.get(cid) or MembershipView.start(cid, conversation.type, self._me)
        params: dict[str, Any] = {"limit": _PAGE}
        if view.started:
            params["cursor"] = view.last_event_id
        while True:
            body = self._call("GET", f"/v1/conversations/{cid}/events", params=params).json()
            try:
                view.apply(body["items"], master_key_of)
            except MembershipError as error:
                raise TrustError(
                    f"The membership record of conversation {cid[:8]} does not check out ({error}). "
                    "Nothing is sent to it or read from it until it does."
                ) from None
            if body.get("next_cursor") is None:
                break
            params = {"limit": _PAGE, "cursor": body["next_cursor"]}
        self._views[cid] = view
        return view

    def cached(self, conversation_id: str) -> MembershipView | None:
        return self._views.get(canonical_uuid(conversation_id))

    def forget(self, conversation_id: str) -> None:
        self._views.pop(canonical_uuid(conversation_id), None)

    def to_state(self) -> list[dict[str, Any]]:
        return [view.to_state() for view in self._views.values()]

    @classmethod
    def from_state(cls, call: Call, me: str, items: list[Mapping[str, Any]]) -> Memberships:
        views = {}
        for item in items:
            view = MembershipView.from_state(item)
            views[view.conversation_id] = view
        return cls(call, me, views)
