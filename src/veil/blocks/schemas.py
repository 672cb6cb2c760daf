"""Wire models of the Blocks API."""

from __future__ import annotations

import uuid

from veil.core.wire import ResponseModel, Timestamp


class BlockView(ResponseModel):
    """A user the caller blocked, and since when."""

    user_id: uuid.UUID
    created_at: Timestamp


class BlockList(ResponseModel):
    items: list[BlockView]
    next_cursor: str | None
