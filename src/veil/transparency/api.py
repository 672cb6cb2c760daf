"""Key-transparency routes: parse, one service call, respond. Signed-in users only, like key
lookups (`GET /v1/users/{id}/devices`), and under the same limits."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, state_of
from veil.core.web.params import LIMIT, MAX_BIGINT, IntQuery, UuidQuery
from veil.transparency.head import keys_for
from veil.transparency.schemas import (
    ConsistencyProof,
    InclusionProof,
    KeyEndorsement,
    LogEntries,
    LogEntry,
    LogKey,
    SignedTreeHead,
)
from veil.transparency.service import TransparencyService

TAG = "transparency"

START = IntQuery("start", 0, MAX_BIGINT, 0, "Index of the first leaf to list (a `next_cursor`).")
# The name every other list of the API uses for the same thing.
CURSOR = IntQuery("cursor", 0, MAX_BIGINT, None, "The same as `start`, by the name other lists use.")
USER_ID = UuidQuery("user_id", "The user whose latest leaf to prove.", required=True)
TREE_SIZE = IntQuery(
    "tree_size", 1, MAX_BIGINT, None, "Size of the tree to prove against; default: the latest signed head's."
)
FIRST = IntQuery("first", 0, MAX_BIGINT, None, "The older tree size.", required=True)
SECOND = IntQuery(
    "second", 0, MAX_BIGINT, None, "The newer tree size, at most the latest head's.", required=True
)


def _service(request: Request) -> TransparencyService:
    service: TransparencyService = state_of(request, "transparency")
    return service


async def get_key(request: Request, principal: Principal) -> Response:
    keys = _service(request).keys
    endorsements = [
        KeyEndorsement(public_key=e.public_key, previous_key=e.previous_key, signature=e.signature)
        for e in keys.endorsements
    ]
    return json_response(LogKey(public_key=keys.public_key, endorsements=endorsements))


async def get_head(request: Request, principal: Principal) -> Response:
    head = await _service(request).head()
    return json_response(
        SignedTreeHead(
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            timestamp=head.timestamp_ms,
            signature=head.signature,
        )
    )


async def list_entries(request: Request, principal: Principal) -> Response:
    cursor = CURSOR(request)
    page = await _service(request).entries(START(request) if cursor is None else cursor, LIMIT(request))
    return json_response(
        LogEntries(
            items=[LogEntry(index=index, leaf=leaf) for index, leaf in page.items],
            next_cursor=None if page.next_start is None else str(page.next_start),
        )
    )


async def prove_inclusion(request: Request, principal: Principal) -> Response:
    user_id = USER_ID(request)
    assert user_id is not None  # required: parse_query refused its absence
    proof = await _service(request).inclusion(user_id, TREE_SIZE(request))
    return json_response(
        InclusionProof(
            leaf_index=proof.leaf_index,
            leaf=proof.leaf,
            tree_size=proof.tree_size,
            audit_path=proof.audit_path,
        )
    )


async def prove_consistency(request: Request, principal: Principal) -> Response:
    first, second = FIRST(request), SECOND(request)
    assert first is not None and second is not None  # required: parse_query refused their absence
    proof = await _service(request).consistency(first, second)
    return json_response(ConsistencyProof(first=first, second=second, proof=proof))


def build(resources: Resources) -> TransparencyService:
    # The keys are read and checked here, at start: a bad key file stops the process.
    return TransparencyService(resources.db, keys_for(resources.settings), resources.clock)


MODULE = ServiceModule(
    "transparency",
    [
        Endpoint(
            "GET",
            "/v1/transparency/key",
            get_key,
            "The key-transparency log's Ed25519 public key (base64 of its 32 raw bytes).",
            TAG,
            responses={200: LogKey},
        ),
        Endpoint(
            "GET",
            "/v1/transparency/head",
            get_head,
            "The latest signed tree head of the log of master-key and certified-device changes."
            " `signature` is the log key's Ed25519 signature over `veil/tree-head/v1` (ASCII) ||"
            " tree_size (8 bytes big-endian) || timestamp in ms (8 bytes big-endian) || root_hash"
            " (32). Hashing as RFC 9162: leaf SHA-256(0x00 || leaf), node SHA-256(0x01 || l || r).",
            TAG,
            responses={200: SignedTreeHead},
        ),
        Endpoint(
            "GET",
            "/v1/transparency/entries",
            list_entries,
            "The log's leaves in order from index `start`, for monitors that rebuild the tree;"
            " `next_cursor` is the next `start` (null at the end; `cursor` is the same as `start`)."
            " A leaf (104 bytes) is"
            " SHA-256('veil/transparency/user/v1' || user_id) || version (u64 BE) || master_key"
            " (32 zero bytes: none) || SHA-256 of the certified devices sorted by device_id, each"
            " device_id || identity_key || signing_key || certificate.",
            TAG,
            responses={200: LogEntries},
            query=(START, CURSOR, LIMIT),
        ),
        Endpoint(
            "GET",
            "/v1/transparency/inclusion",
            prove_inclusion,
            "The user's latest leaf in the tree of `tree_size` leaves and its RFC 9162 audit path"
            " (siblings from the leaf up). A size beyond the latest signed head is a 422; a user"
            " with no leaf in that tree a 404.",
            TAG,
            responses={200: InclusionProof},
            errors=(404,),
            query=(USER_ID, TREE_SIZE),
        ),
        Endpoint(
            "GET",
            "/v1/transparency/consistency",
            prove_consistency,
            "The RFC 9162 consistency proof from the tree of `first` leaves to that of `second`"
            " (empty when `first` is 0 or equals `second`). `first` larger than `second`, or"
            " `second` beyond the latest signed head, is a 422.",
            TAG,
            responses={200: ConsistencyProof},
            query=(FIRST, SECOND),
        ),
    ],
    build=build,
)
