"""Keys routes: parse, one service call, respond."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from veil.core.problems import not_found
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, no_content, state_of
from veil.core.web.params import LIMIT, MAX_BIGINT, IntQuery, path_uuid
from veil.keys import pq_prekeys
from veil.keys.identity import IdentityService
from veil.keys.schemas import (
    Accepted,
    AcknowledgeDeviceMessages,
    AddOneTimePrekeys,
    CertificateView,
    CertifyDevice,
    ClaimedBundle,
    DeviceList,
    DeviceMessageList,
    DeviceMessageView,
    DeviceView,
    Gap,
    IdentityView,
    OneTimePrekeyView,
    PqPrekey,
    PqPrekeyView,
    PrekeyCount,
    PublishKeys,
    RemainingPrekeys,
    ResetMasterKey,
    SendDeviceMessages,
    SetMasterKey,
    SignedPrekeyView,
)
from veil.keys.service import (
    LOW_PREKEYS,
    DeviceEnvelope,
    KeysLimits,
    KeysService,
    NewOneTimePrekeys,
    PrekeysLeft,
    PublishedKeys,
)
from veil.keys.store import DeviceRecord, MasterKey

TAG = "keys"


def _service(request: Request) -> KeysService:
    service: KeysService = state_of(request, "keys")
    return service


def _device_view(device: DeviceRecord) -> DeviceView:
    return DeviceView(
        device_id=device.device_id,
        identity_key=device.identity_key,
        signing_key=device.signing_key,
        signed_prekey=SignedPrekeyView(
            key_id=device.signed_prekey_id,
            public_key=device.signed_prekey,
            signature=device.signed_prekey_signature,
        ),
        certificate=CertificateView(signature=device.certificate) if device.certificate else None,
    )


def _pq_prekey(key: PqPrekey) -> pq_prekeys.PqPrekey:
    return pq_prekeys.PqPrekey(key.key_id, key.public_key, key.signature)


def _prekey_count(left: PrekeysLeft) -> Response:
    return json_response(PrekeyCount(count=left.classical, pq_count=left.post_quantum))


async def publish_keys(request: Request, principal: Principal, body: PublishKeys) -> Response:
    left = await _service(request).publish(
        principal,
        PublishedKeys(
            identity_key=body.identity_key,
            signing_key=body.signing_key,
            signed_prekey_id=body.signed_prekey.key_id,
            signed_prekey=body.signed_prekey.public_key,
            signature=body.signed_prekey.signature,
            one_time_prekeys=[(k.key_id, k.public_key) for k in body.one_time_prekeys],
            pq_last_resort_prekey=_pq_prekey(body.pq_last_resort_prekey)
            if body.pq_last_resort_prekey
            else None,
            pq_one_time_prekeys=[_pq_prekey(k) for k in body.pq_one_time_prekeys],
        ),
    )
    return _prekey_count(left)


async def add_one_time_prekeys(request: Request, principal: Principal, body: AddOneTimePrekeys) -> Response:
    keys = NewOneTimePrekeys(
        classical=[(k.key_id, k.public_key) for k in body.one_time_prekeys],
        post_quantum=[_pq_prekey(k) for k in body.pq_one_time_prekeys],
    )
    return _prekey_count(await _service(request).add_one_time_prekeys(principal, keys))


async def count_one_time_prekeys(request: Request, principal: Principal) -> Response:
    left = await _service(request).remaining(principal)
    return json_response(
        RemainingPrekeys(one_time_prekeys=left.classical, pq_one_time_prekeys=left.post_quantum)
    )


async def list_devices(request: Request, principal: Principal) -> Response:
    directory = await _service(request).devices(path_uuid(request, "user_id"))
    return json_response(
        DeviceList(master_key=directory.master_key, items=[_device_view(d) for d in directory.devices])
    )


async def claim_bundle(request: Request, principal: Principal) -> Response:
    bundle = await _service(request).claim(
        principal, path_uuid(request, "user_id"), path_uuid(request, "device_id")
    )
    view = _device_view(bundle.device)
    one_time, pq = bundle.one_time_prekey, bundle.pq_prekey
    return json_response(
        ClaimedBundle(
            **view.__dict__,
            one_time_prekey=OneTimePrekeyView(key_id=one_time[0], public_key=one_time[1])
            if one_time
            else None,
            pq_prekey=PqPrekeyView(
                key_id=pq.key.key_id,
                public_key=pq.key.public_key,
                signature=pq.key.signature,
                last_resort=pq.last_resort,
            )
            if pq
            else None,
        )
    )


async def send_device_messages(request: Request, principal: Principal, body: SendDeviceMessages) -> Response:
    envelopes = [DeviceEnvelope(m.device_id, m.ciphertext, m.nonce, m.auth_tag) for m in body.messages]
    queued = await _service(request).send(principal, body.content_type, envelopes)
    return json_response(Accepted(queued=queued), status=202)


DEVICE_MESSAGE_CURSOR = IntQuery(
    "cursor", 0, MAX_BIGINT, 0, "The `next_cursor` of the previous page: list the envelopes after that id."
)


async def list_device_messages(request: Request, principal: Principal) -> Response:
    limit, after = LIMIT(request), DEVICE_MESSAGE_CURSOR(request)
    inbox = await _service(request).inbox(principal, after, limit)
    items = [
        DeviceMessageView(
            id=m.id,
            sender_id=m.sender_user_id,
            sender_device_id=m.sender_device_id,
            content_type=m.content_type,
            ciphertext=m.ciphertext,
            nonce=m.nonce,
            auth_tag=m.auth_tag,
            created_at=m.created_at,
        )
        for m in inbox.messages
    ]
    gap = Gap(dropped=inbox.gap.dropped, since=inbox.gap.first_dropped_at) if inbox.gap else None
    next_cursor = str(items[-1].id) if len(items) == limit else None
    return json_response(DeviceMessageList(items=items, gap=gap, next_cursor=next_cursor))


async def acknowledge_device_message(request: Request, principal: Principal) -> Response:
    message_id: int = request.path_params["message_id"]
    if message_id >= 2**63:
        raise not_found("No such device message.")
    await _service(request).acknowledge(principal, message_id)
    return no_content()


async def acknowledge_device_messages(
    request: Request, principal: Principal, body: AcknowledgeDeviceMessages
) -> Response:
    if "up_to_id" in body.model_fields_set:
        await _service(request).acknowledge_many(principal, up_to_id=body.up_to_id)
    else:
        await _service(request).acknowledge_many(principal, ids=body.ids)
    return no_content()


def _identity(request: Request) -> IdentityService:
    service: IdentityService = state_of(request, "identity")
    return service


def _identity_view(key: MasterKey) -> IdentityView:
    return IdentityView(user_id=key.user_id, master_key=key.master_key, changed_at=key.changed_at)


async def set_master_key(request: Request, principal: Principal, body: SetMasterKey) -> Response:
    created, key = await _identity(request).set_master_key(principal, body.master_key)
    return json_response(_identity_view(key), status=201 if created else 200)


async def reset_master_key(request: Request, principal: Principal, body: ResetMasterKey) -> Response:
    replaced = await _identity(request).reset(principal, body.password, body.master_key)
    return json_response(_identity_view(replaced))


async def get_master_key(request: Request, principal: Principal) -> Response:
    return json_response(_identity_view(await _identity(request).master_key(path_uuid(request, "user_id"))))


async def certify_device(request: Request, principal: Principal, body: CertifyDevice) -> Response:
    await _identity(request).certify(principal, path_uuid(request, "device_id"), body.signature)
    return no_content()


def build_identity(resources: Resources) -> IdentityService:
    return IdentityService(
        resources.db,
        resources.passwords,
        resources.limiter,
        resources.clock,
        # The password change's budget (and limiter key): both re-check a signed-in user's password.
        Rate.per_window(resources.settings.password_changes_per_hour, 3600),
    )


def build(resources: Resources) -> KeysService:
    settings = resources.settings
    return KeysService(
        resources.db,
        resources.limiter,
        resources.clock,
        KeysLimits(
            max_devices_per_user=settings.max_devices_per_user,
            max_one_time_prekeys=settings.max_one_time_prekeys,
            claims_per_target_device=Rate.per_window(settings.claims_per_device_per_hour, 3600),
            one_time_prekeys_per_device=Rate.per_window(settings.one_time_prekeys_per_device_per_hour, 3600),
            # An hour's worth of claims at the budget's full rate: time for the owner to top up.
            low_prekeys=max(LOW_PREKEYS, settings.one_time_prekeys_per_device_per_hour),
            envelopes_per_sender=Rate.per_window(settings.device_envelopes_per_hour, 3600),
            device_queue_per_sender=settings.device_queue_per_sender,
            device_queue_cap=settings.device_queue_cap,
            device_message_ttl=timedelta(days=settings.device_message_ttl_days),
            max_ciphertext_bytes=settings.max_ciphertext_bytes,
            sends_per_user=Rate.per_window(settings.messages_per_minute, 60),
        ),
    )


MODULE = ServiceModule(
    "keys",
    [
        Endpoint(
            "PUT",
            "/v1/keys",
            publish_keys,
            "Publish this device's public keys. Optional post-quantum members:"
            " `pq_last_resort_prekey` replaces the device's last-resort ML-KEM-768 prekey (absent or"
            " null keeps it) and `pq_one_time_prekeys` (at most 100) adds one-time ones. Every PQ"
            " prekey carries the Ed25519 signature by this request's `signing_key` over"
            " `veil/pq-prekey/v1` (ASCII) || key_id (u32 big-endian) || public_key (1184 bytes); one"
            " that does not verify, or is no valid ML-KEM-768 key, is a 422 naming it, and PQ key ids"
            " must differ. A new signing key drops the PQ prekeys the previous one signed.",
            TAG,
            body=PublishKeys,
            responses={200: PrekeyCount},
            errors=(409,),
        ),
        Endpoint(
            "POST",
            "/v1/keys/one-time",
            add_one_time_prekeys,
            "Add one-time prekeys: `one_time_prekeys`, `pq_one_time_prekeys` (ML-KEM-768, signed as"
            " in `PUT /v1/keys` by the device's current signing key) or both, at least one non-empty."
            " At most 100 unclaimed one-time PQ prekeys per device. `count` and `pq_count` are how"
            " many of each remain.",
            TAG,
            body=AddOneTimePrekeys,
            responses={200: PrekeyCount},
            errors=(409,),
        ),
        Endpoint(
            "GET",
            "/v1/keys/count",
            count_one_time_prekeys,
            "Unclaimed one-time prekeys of this device, classical and post-quantum.",
            TAG,
            responses={200: RemainingPrekeys},
        ),
        Endpoint(
            "GET",
            "/v1/users/{user_id}/devices",
            list_devices,
            "A user's devices and public keys.",
            TAG,
            responses={200: DeviceList},
            errors=(404,),
        ),
        Endpoint(
            "POST",
            "/v1/users/{user_id}/devices/{device_id}/claim",
            claim_bundle,
            "Claim a device's key bundle, with one one-time prekey while any is left and the device's"
            " hourly budget of handed-out one-time prekeys lasts; otherwise `one_time_prekey` is null"
            " and the session is set up with the signed prekey alone. `pq_prekey` is a one-time"
            " ML-KEM-768 prekey under the same conditions (deleted as it is handed out), otherwise the"
            " device's last-resort one (`last_resort: true`), or null if the device never published one.",
            TAG,
            responses={200: ClaimedBundle},
            errors=(404,),
            rate_limited=True,
        ),
        Endpoint(
            "POST",
            "/v1/devices/messages",
            send_device_messages,
            "Queue device-to-device envelopes (session set-up, sender keys). Every envelope counts"
            " against the sender's hourly envelope budget, and a sender may hold a bounded number of"
            " unacknowledged envelopes per recipient device (429 for that sender only). Envelopes for"
            " the devices of someone who blocked the sender are accepted and dropped.",
            TAG,
            body=SendDeviceMessages,
            responses={202: Accepted},
            errors=(404,),
            rate_limited=True,
        ),
        Endpoint(
            "GET",
            "/v1/devices/messages",
            list_device_messages,
            "This device's queued device messages, oldest first (`?cursor=`, `?limit=`).",
            TAG,
            responses={200: DeviceMessageList},
            query=(LIMIT, DEVICE_MESSAGE_CURSOR),
        ),
        Endpoint(
            "DELETE",
            "/v1/devices/messages/{message_id:int}",
            acknowledge_device_message,
            "Acknowledge (and so delete) one queued device message.",
            TAG,
            responses={204: None},
            errors=(404,),
        ),
        Endpoint(
            "POST",
            "/v1/devices/messages/ack",
            acknowledge_device_messages,
            "Acknowledge (and so delete) many of this device's queued device messages at once:"
            " `{up_to_id}` every one up to that id, or `{ids: [...]}` (1 to 500) those listed."
            " Ids that are not in the caller device's queue are ignored.",
            TAG,
            body=AcknowledgeDeviceMessages,
            responses={204: None},
        ),
    ],
    build=build,
)

# Master keys and device certificates: their own service object (veil.keys.identity), which
# re-checks passwords for a reset; served by the keys processes.
IDENTITY_MODULE = ServiceModule(
    "identity",
    [
        Endpoint(
            "PUT",
            "/v1/identity",
            set_master_key,
            "Set the caller's master key (an Ed25519 public key that certifies the user's devices):"
            " 201 when set, 200 if this very key is set already; a different key already set is a"
            " 409 (only a reset replaces it). A small-order or non-canonical encoding is a 422.",
            TAG,
            body=SetMasterKey,
            responses={201: IdentityView, 200: IdentityView},
            errors=(409,),
        ),
        Endpoint(
            "POST",
            "/v1/identity/reset",
            reset_master_key,
            "Replace the master key after losing every device that held it, proving the password"
            " again (403 if wrong; attempts share the password-change budget per user). Every"
            " certificate of the user's devices is dropped, and everyone who shares a conversation"
            " with the user gets an `identity_changed` event. A user who never had a master key"
            " sets the first one this way as `PUT /v1/identity` would (the password is still"
            " required): nothing changed for anyone, so nobody is told. The key already set is a"
            " retry: 200, and nothing changes. A small-order or non-canonical key is a 422.",
            TAG,
            body=ResetMasterKey,
            responses={200: IdentityView},
            errors=(403, 404),
            rate_limited=True,
        ),
        Endpoint(
            "GET",
            "/v1/users/{user_id}/identity",
            get_master_key,
            "A user's master key; 404 before one is set.",
            TAG,
            responses={200: IdentityView},
            errors=(404,),
        ),
        Endpoint(
            "PUT",
            "/v1/devices/{device_id}/certificate",
            certify_device,
            "Certify one of the caller's own devices with the master key: `signature` is the Ed25519"
            " signature by the current master key over `veil/device-certificate/v1` (ASCII) ||"
            " user_id (16 raw bytes) || device_id (16) || identity_key (32) || signing_key (32)."
            " Someone else's device, or one without published keys, is a 404; a signature that does"
            " not verify (or no master key set) is a 422. The certificate is dropped when the"
            " device's identity or signing key changes, and at a master-key reset.",
            TAG,
            body=CertifyDevice,
            responses={204: None},
            errors=(404,),
        ),
    ],
    build=build_identity,
)
