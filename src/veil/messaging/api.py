"""Messaging routes: parse, one service call, respond."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from veil.core.problems import FieldError, validation_failed
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, no_content, state_of
from veil.core.web.params import ID_CURSOR, LIMIT, MAX_BIGINT, IntQuery, path_uuid
from veil.messaging.schemas import (
    ConversationList,
    ConversationView,
    CreateConversation,
    CreateDirect,
    Envelope,
    Invite,
    MembershipChange,
    MembershipEventList,
    MessageList,
    Receipt,
    RoleChange,
    SendResult,
)
from veil.messaging.service import MessagingLimits, MessagingService, OutgoingMessage
from veil.messaging.views import conversation_view, event_view, message_view

TAG = "messaging"


def _service(request: Request) -> MessagingService:
    service: MessagingService = state_of(request, "messaging")
    return service


def _conversation_id(request: Request) -> uuid.UUID:
    return path_uuid(request, "conversation_id")


AFTER_SEQ = IntQuery(
    "after_seq", 0, MAX_BIGINT, None, "List ascending from the message after this seq (default 0)."
)
BEFORE_SEQ = IntQuery("before_seq", 1, MAX_BIGINT, None, "List descending from the message before this seq.")
SEQ_CURSOR = IntQuery(
    "cursor",
    0,
    MAX_BIGINT,
    None,
    "The `next_cursor` of the previous page; it continues in the direction of the first page.",
)
EVENT_CURSOR = IntQuery(
    "cursor", 0, MAX_BIGINT, None, "The `next_cursor` of the previous page; omit it for the first page."
)


def _commit(body: MembershipChange | None) -> bytes | None:
    return body.commit if body is not None else None


def _after_event_id(body: MembershipChange | None) -> int | None:
    return body.after_event_id if body is not None else None


async def create_conversation(request: Request, principal: Principal, body: CreateConversation) -> Response:
    spec = body.root
    if isinstance(spec, CreateDirect):
        detail, created = await _service(request).create_direct(principal, spec.member_id)
        return json_response(conversation_view(detail), status=201 if created else 200)
    detail = await _service(request).create_group(principal, spec.encrypted_meta, spec.commit)
    return json_response(conversation_view(detail), status=201)


async def list_conversations(request: Request, principal: Principal) -> Response:
    limit = LIMIT(request)
    details = await _service(request).conversations(principal, ID_CURSOR(request), limit)
    next_cursor = str(details[-1].conversation.id) if len(details) == limit else None
    return json_response(
        ConversationList(items=[conversation_view(d) for d in details], next_cursor=next_cursor)
    )


async def get_conversation(request: Request, principal: Principal) -> Response:
    return json_response(conversation_view(await _service(request).get(principal, _conversation_id(request))))


async def invite(request: Request, principal: Principal, body: Invite) -> Response:
    await _service(request).invite(
        principal,
        _conversation_id(request),
        body.user_id,
        body.commit,
        after_event_id=body.after_event_id,
    )
    return Response(status_code=201)


async def accept_invitation(
    request: Request, principal: Principal, body: MembershipChange | None
) -> Response:
    await _service(request).answer_invitation(
        principal,
        _conversation_id(request),
        accept=True,
        commit=_commit(body),
        after_event_id=_after_event_id(body),
    )
    return no_content()


async def decline_invitation(
    request: Request, principal: Principal, body: MembershipChange | None
) -> Response:
    await _service(request).answer_invitation(
        principal,
        _conversation_id(request),
        accept=False,
        commit=_commit(body),
        after_event_id=_after_event_id(body),
    )
    return no_content()


async def remove_member(request: Request, principal: Principal, body: MembershipChange | None) -> Response:
    raw = request.path_params["user_id"]
    subject = principal.user_id if raw == "me" else path_uuid(request, "user_id")
    await _service(request).remove_member(
        principal, _conversation_id(request), subject, _commit(body), after_event_id=_after_event_id(body)
    )
    return no_content()


async def change_role(request: Request, principal: Principal, body: RoleChange) -> Response:
    await _service(request).set_role(
        principal,
        _conversation_id(request),
        path_uuid(request, "user_id"),
        body.role,
        body.commit,
        after_event_id=body.after_event_id,
    )
    return no_content()


async def list_events(request: Request, principal: Principal) -> Response:
    limit = LIMIT(request)
    items = await _service(request).events(
        principal, _conversation_id(request), EVENT_CURSOR(request) or 0, limit
    )
    next_cursor = str(items[-1].id) if len(items) == limit else None
    return json_response(MembershipEventList(items=[event_view(e) for e in items], next_cursor=next_cursor))


async def send_message(request: Request, principal: Principal, body: Envelope) -> Response:
    service = _service(request)
    await service.check_send_rate(principal)
    sent = await service.send(
        principal,
        _conversation_id(request),
        OutgoingMessage(
            body.message_id,
            body.ciphertext,
            body.nonce,
            body.auth_tag,
            body.content_type,
            body.parent_id,
            body.key_epoch,
        ),
    )
    result = SendResult(message_id=sent.message_id, seq=sent.seq, created_at=sent.created_at)
    return json_response(result, status=201 if sent.created else 200)


async def list_messages(request: Request, principal: Principal) -> Response:
    limit, after, before, cursor = (
        LIMIT(request),
        AFTER_SEQ(request),
        BEFORE_SEQ(request),
        SEQ_CURSOR(request),
    )
    if after is not None and before is not None:
        raise validation_failed([FieldError(("query",), "Use after_seq or before_seq, not both.")])
    if cursor is not None:  # the cursor continues in the direction of the first page
        after, before = (None, cursor) if before is not None else (cursor, None)
    items = await _service(request).history(
        principal, _conversation_id(request), after_seq=after, before_seq=before, limit=limit
    )
    next_cursor = str(items[-1].seq) if len(items) == limit else None
    return json_response(MessageList(items=[message_view(m) for m in items], next_cursor=next_cursor))


async def post_receipt(request: Request, principal: Principal, body: Receipt) -> Response:
    await _service(request).receipt(principal, _conversation_id(request), body.type, body.up_to_seq)
    return no_content()


def build(resources: Resources) -> MessagingService:
    settings = resources.settings
    return MessagingService(
        resources.db,
        resources.limiter,
        resources.clock,
        MessagingLimits(
            sends_per_user=Rate.per_window(settings.messages_per_minute, 60),
            max_ciphertext_bytes=settings.max_ciphertext_bytes,
            groups_per_user=Rate.per_window(settings.groups_per_hour, 3600),
            invitations_per_user=Rate.per_window(settings.invitations_per_hour, 3600),
            pending_invitations_per_invitee=settings.pending_invitations_per_invitee,
        ),
        resources.metrics,
    )


_C = "/v1/conversations/{conversation_id}"

# Said once for every operation that changes membership or roles.
_COMMIT = (
    " Takes an optional `commit`: standard base64 of 1 byte to 16 KiB (more, or not canonical "
    "base64, is a 422 that changes nothing), opaque to the server, stored with the event this "
    "request causes and served back by `GET /v1/conversations/{conversation_id}/events`. Clients put "
    "there a statement signed by the acting device so that members check each change themselves."
)
# Said once for every commit-bearing operation that has a predecessor (all but group creation).
_AFTER_EVENT_ID = (
    " With a `commit`, it takes an optional `after_event_id`: the `event_id` (from "
    "`GET /v1/conversations/{conversation_id}/events`) of the latest event the commit was built "
    "on, 0 if the client saw none. The change is recorded only if that is still the "
    "conversation's latest event; otherwise the answer is 409 with a top-level `last_event_id` "
    "(the current latest) and nothing changes: fetch the events after it and rebuild the commit. "
    "So two members who act at once cannot both extend the same predecessor and fork the chain "
    "(docs/adr/0017-membership-commit-order.md). A stale `after_event_id` is a 409 before any "
    "check of the roster (a 403 or a 409 about the members may follow once rebuilt). "
    "`after_event_id` without a `commit`, negative, or not a JSON integer is a 422; without it, "
    "the change is recorded on whatever came before, as it always was."
)
_OPTIONAL_BODY = (
    " The body is optional: no body at all is the same as `{}`; a body must be JSON "
    "`{commit, after_event_id}`."
)

MODULE = ServiceModule(
    "messaging",
    [
        Endpoint(
            "POST",
            "/v1/conversations",
            create_conversation,
            "Start a direct conversation (200 if it exists) or a group. A pair has one direct "
            "conversation; whoever left it comes back only by starting it again themselves. When the "
            "other side starts it, the answer is 200 with the conversation as it is, without the one "
            "who left (`members` lists current members only): they are not re-added and receive "
            "nothing sent there until they return, and then only what comes after. A user who does "
            "not exist, or who blocked the caller, is the same 404. Group creation is rate limited "
            "per user (`VEIL_GROUPS_PER_HOUR`). A group's creation" + _COMMIT + " A direct "
            "conversation takes no `commit` (a 422, as any unknown field): its roster is two users "
            "by construction, which clients check themselves, so there is no chain to sign; its "
            "events (`created`, and `joined` when the one who left returns) are listed with a null "
            "`commit`.",
            TAG,
            body=CreateConversation,
            responses={201: ConversationView, 200: ConversationView},
            errors=(404,),
            rate_limited=True,
        ),
        Endpoint(
            "GET",
            "/v1/conversations",
            list_conversations,
            "The caller's conversations.",
            TAG,
            responses={200: ConversationList},
            query=(LIMIT, ID_CURSOR),
        ),
        Endpoint(
            "GET",
            _C + "/events",
            list_events,
            "Every membership and role change of the conversation, oldest first: `created`, "
            "`invited`, `joined`, `declined`, `left`, `removed`, `role_changed`. `epoch` is the "
            "conversation's epoch after the change; `actor_id` and `actor_device_id` (the acting "
            "device's session id) name who made it, `subject_id` whom it concerns, and `commit` is "
            "the base64 commit its request carried, or null. Joined members and invitees may read "
            "it (an invitee checks the chain before accepting); anyone else gets the same 404 as for "
            "a conversation that does not exist, and so do former members. Erasing an account "
            "deletes the events about that user and clears `actor_id`, `actor_device_id` and "
            "`commit` of the changes they made, so a chain that spans an erased account has gaps; "
            "`actor_device_id` is also null for changes recorded before it was kept. `event_id` "
            "increases in the order the changes took effect; page with `limit` and `cursor`.",
            TAG,
            responses={200: MembershipEventList},
            errors=(404,),
            query=(LIMIT, EVENT_CURSOR),
        ),
        Endpoint(
            "GET",
            _C,
            get_conversation,
            "One conversation with its members.",
            TAG,
            responses={200: ConversationView},
            errors=(404,),
        ),
        Endpoint(
            "POST",
            _C + "/invitations",
            invite,
            "Invite a user (group owners and admins). A user who does not exist, or who blocked the "
            "caller, is the same 404. 429 beyond the inviter's hourly budget "
            "(`VEIL_INVITATIONS_PER_HOUR`) or with too many of the inviter's invitations still "
            "pending with this invitee (`VEIL_PENDING_INVITATIONS_PER_INVITEE`)." + _COMMIT + _AFTER_EVENT_ID,
            TAG,
            body=Invite,
            responses={201: None},
            errors=(403, 404, 409),
            rate_limited=True,
        ),
        Endpoint(
            "POST",
            _C + "/invitations/accept",
            accept_invitation,
            "Accept an invitation." + _COMMIT + _AFTER_EVENT_ID + _OPTIONAL_BODY,
            TAG,
            body=MembershipChange,
            body_required=False,
            responses={204: None},
            errors=(404, 409),
        ),
        Endpoint(
            "POST",
            _C + "/invitations/decline",
            decline_invitation,
            "Decline an invitation." + _COMMIT + _AFTER_EVENT_ID + _OPTIONAL_BODY,
            TAG,
            body=MembershipChange,
            body_required=False,
            responses={204: None},
            errors=(404, 409),
        ),
        Endpoint(
            "DELETE",
            _C + "/members/{user_id}",
            remove_member,
            "Leave (`me`) or remove a member (admins); removing an invitee withdraws the invitation. "
            "When the last owner leaves, an heir becomes owner (the first admin, else the "
            "longest-standing member): a `role_changed` event follows the `left` one, with the "
            "leaver as actor and a null `commit`." + _COMMIT + _AFTER_EVENT_ID + _OPTIONAL_BODY,
            TAG,
            body=MembershipChange,
            body_required=False,
            responses={204: None},
            errors=(403, 404, 409),
        ),
        Endpoint(
            "PUT",
            _C + "/members/{user_id}",
            change_role,
            "Make a member an admin or back (owner only): a `role_changed` event. Setting the role "
            "the member already has changes nothing and records no event." + _COMMIT + _AFTER_EVENT_ID,
            TAG,
            body=RoleChange,
            responses={204: None},
            errors=(403, 404, 409),
        ),
        Endpoint(
            "POST",
            _C + "/messages",
            send_message,
            "Send an encrypted envelope (idempotent by message_id).",
            TAG,
            body=Envelope,
            responses={201: SendResult, 200: SendResult},
            errors=(404, 409),
            rate_limited=True,
        ),
        Endpoint(
            "GET",
            _C + "/messages",
            list_messages,
            "History by seq: `after_seq` ascending or `before_seq` descending.",
            TAG,
            responses={200: MessageList},
            errors=(404,),
            query=(LIMIT, AFTER_SEQ, BEFORE_SEQ, SEQ_CURSOR),
        ),
        Endpoint(
            "POST",
            _C + "/receipts",
            post_receipt,
            "Delivered/read up to a seq (metadata only).",
            TAG,
            body=Receipt,
            responses={204: None},
            errors=(404,),
        ),
    ],
    build=build,
)
