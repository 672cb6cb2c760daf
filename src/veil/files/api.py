"""Attachment routes: parse, one service call, respond."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, no_content, state_of
from veil.core.web.params import path_uuid
from veil.files.schemas import (
    AttachmentDownload,
    AttachmentView,
    DownloadRequest,
    Reservation,
    Reserve,
    UploadRequest,
)
from veil.files.service import AttachmentLimits, AttachmentService
from veil.files.store import AttachmentRecord

TAG = "attachments"


def _service(request: Request) -> AttachmentService:
    service: AttachmentService = state_of(request, "files")
    return service


def _view(attachment: AttachmentRecord) -> AttachmentView:
    return AttachmentView(
        attachment_id=attachment.id,
        size=attachment.size,
        sha256=attachment.sha256,
        created_at=attachment.created_at,
    )


async def reserve(request: Request, principal: Principal, body: Reserve) -> Response:
    upload = await _service(request).reserve(principal, body.conversation_id, body.size, body.sha256)
    request_to_store = UploadRequest(
        url=upload.url, method="PUT", headers=upload.headers, expires_at=upload.expires_at
    )
    reservation = Reservation(attachment_id=upload.attachment_id, upload=request_to_store)
    return json_response(reservation, status=201)


async def complete(request: Request, principal: Principal) -> Response:
    attachment = await _service(request).complete(principal, path_uuid(request, "attachment_id"))
    return json_response(_view(attachment))


async def get_attachment(request: Request, principal: Principal) -> Response:
    download = await _service(request).download(principal, path_uuid(request, "attachment_id"))
    view = AttachmentDownload(
        **_view(download.attachment).model_dump(),
        download=DownloadRequest(url=download.url, expires_at=download.expires_at),
    )
    return json_response(view)


async def delete_attachment(request: Request, principal: Principal) -> Response:
    await _service(request).delete(principal, path_uuid(request, "attachment_id"))
    return no_content()


def build(resources: Resources) -> AttachmentService:
    settings = resources.settings
    return AttachmentService(
        resources.db,
        resources.blobs,
        resources.clock,
        AttachmentLimits(
            max_bytes=settings.attachment_max_bytes,
            quota_bytes=settings.attachment_quota_bytes,
            pending_max=settings.attachment_pending_max,
            upload_url_ttl=settings.attachment_upload_url_ttl_seconds,
            reservation_ttl=settings.attachment_reservation_ttl_seconds,
            download_url_ttl=settings.attachment_download_url_ttl_seconds,
        ),
    )


_A = "/v1/attachments/{attachment_id}"

MODULE = ServiceModule(
    "files",
    [
        Endpoint(
            "POST",
            "/v1/attachments",
            reserve,
            "Reserve an upload: a PUT presigned for the exact ciphertext size and SHA-256.",
            TAG,
            body=Reserve,
            responses={201: Reservation},
            errors=(404, 429),
        ),
        Endpoint(
            "POST",
            _A + "/complete",
            complete,
            "Finish an upload once the store holds exactly the reserved bytes.",
            TAG,
            responses={200: AttachmentView},
            errors=(403, 404, 409, 422),
        ),
        Endpoint(
            "GET",
            _A,
            get_attachment,
            "A short-lived download URL (members of the attachment's conversation).",
            TAG,
            responses={200: AttachmentDownload},
            errors=(404, 409),
        ),
        Endpoint(
            "DELETE",
            _A,
            delete_attachment,
            "Delete an attachment and its object (the uploader only).",
            TAG,
            responses={204: None},
            errors=(403, 404),
        ),
    ],
    build=build,
)
