"""Block routes: parse, one service call, respond. Served by the account process."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from veil.blocks.schemas import BlockList, BlockView
from veil.blocks.service import BlocksService
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, no_content, state_of
from veil.core.web.params import ID_CURSOR, LIMIT, path_uuid

TAG = "blocks"


def _service(request: Request) -> BlocksService:
    service: BlocksService = state_of(request, "blocks")
    return service


async def block_user(request: Request, principal: Principal) -> Response:
    await _service(request).block(principal, path_uuid(request, "user_id"))
    return no_content()


async def unblock_user(request: Request, principal: Principal) -> Response:
    await _service(request).unblock(principal, path_uuid(request, "user_id"))
    return no_content()


async def list_blocks(request: Request, principal: Principal) -> Response:
    limit = LIMIT(request)
    records = await _service(request).blocked(principal, ID_CURSOR(request), limit)
    next_cursor = str(records[-1].user_id) if len(records) == limit else None
    items = [BlockView(user_id=r.user_id, created_at=r.created_at) for r in records]
    return json_response(BlockList(items=items, next_cursor=next_cursor))


def build(resources: Resources) -> BlocksService:
    return BlocksService(resources.db, resources.clock)


_B = "/v1/blocks/{user_id}"

MODULE = ServiceModule(
    "blocks",
    [
        Endpoint(
            "PUT",
            _B,
            block_user,
            "Block a user (idempotent). They can no longer invite the caller to a group or start a "
            "direct conversation with them (404, as for a user who does not exist), and their device "
            "messages to the caller's devices are dropped. The caller keeps every ability of their own. "
            "A block removes nobody from a conversation the two share; the caller leaves it, and the "
            "blocked user cannot bring them back. Blocking oneself is a 422; an id without an "
            "account is a 404.",
            TAG,
            responses={204: None},
            errors=(404, 422),
        ),
        Endpoint(
            "DELETE",
            _B,
            unblock_user,
            "Unblock a user (idempotent: 204 also when they were not blocked).",
            TAG,
            responses={204: None},
            errors=(404,),
        ),
        Endpoint(
            "GET",
            "/v1/blocks",
            list_blocks,
            "The users the caller blocked, ordered by user id.",
            TAG,
            responses={200: BlockList},
            query=(LIMIT, ID_CURSOR),
        ),
    ],
    build=build,
)
