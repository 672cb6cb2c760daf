"""Backup slot routes: parse, one service call, respond. The slot is always the caller's own."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from veil.backups.schemas import BackupDownload, BackupReservation, BackupReserve, BackupView
from veil.backups.service import BackupLimits, BackupService
from veil.backups.store import BackupRecord
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, no_content, state_of
from veil.files.schemas import DownloadRequest, UploadRequest

TAG = "backup"
_PATH = "/v1/backup"


def _service(request: Request) -> BackupService:
    service: BackupService = state_of(request, "backups")
    return service


def _view(backup: BackupRecord) -> BackupView:
    assert backup.created_at is not None  # only a current backup is shown
    return BackupView(size=backup.size, sha256=backup.sha256, created_at=backup.created_at)


async def reserve_backup(request: Request, principal: Principal, body: BackupReserve) -> Response:
    upload = await _service(request).reserve(principal, body.size, body.sha256)
    request_to_store = UploadRequest(
        url=upload.url, method="PUT", headers=upload.headers, expires_at=upload.expires_at
    )
    return json_response(BackupReservation(upload=request_to_store), status=201)


async def complete_backup(request: Request, principal: Principal) -> Response:
    return json_response(_view(await _service(request).complete(principal)))


async def get_backup(request: Request, principal: Principal) -> Response:
    download = await _service(request).download(principal)
    view = BackupDownload(
        **_view(download.backup).model_dump(),
        download=DownloadRequest(url=download.url, expires_at=download.expires_at),
    )
    return json_response(view)


async def delete_backup(request: Request, principal: Principal) -> Response:
    await _service(request).delete(principal)
    return no_content()


def build(resources: Resources) -> BackupService:
    settings = resources.settings
    return BackupService(
        resources.db,
        resources.blobs,
        resources.clock,
        resources.limiter,
        BackupLimits(
            max_bytes=settings.backup_max_bytes,
            reservations=Rate.per_window(settings.backups_per_hour, 3600),
            upload_url_ttl=settings.attachment_upload_url_ttl_seconds,
            reservation_ttl=settings.attachment_reservation_ttl_seconds,
            download_url_ttl=settings.attachment_download_url_ttl_seconds,
        ),
    )


_EXAMPLE_SHA256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

MODULE = ServiceModule(
    "backups",
    [
        Endpoint(
            "PUT",
            _PATH,
            reserve_backup,
            "Reserve an upload of a new backup: a PUT presigned for the exact ciphertext size and SHA-256.",
            TAG,
            body=BackupReserve,
            responses={201: BackupReservation},
            rate_limited=True,
            description=(
                "The backup is one opaque object per user, encrypted by the client; the server sees "
                "its size and SHA-256 only. Send the returned request (with exactly its `headers`) "
                "straight to the object store, which refuses a body of another length or digest, "
                "then call `POST /v1/backup/complete`. Every reservation gets a fresh object and "
                "replaces an earlier unfinished one (whose object is deleted); the current backup "
                "stays as it is until the new one is completed. A `size` over "
                "`VEIL_BACKUP_MAX_BYTES` (100 MiB by default) is a 413."
            ),
            example={"size": 1048576, "sha256": _EXAMPLE_SHA256},
        ),
        Endpoint(
            "POST",
            _PATH + "/complete",
            complete_backup,
            "Make the uploaded backup the current one, once the store holds exactly the reserved bytes.",
            TAG,
            responses={200: BackupView},
            errors=(404, 422),
            description=(
                "The server asks the store for the pending object's size and SHA-256. If they "
                "differ, or nothing was uploaded, the answer is a 422 (a mismatching object is "
                "deleted) and the current backup is unchanged. Otherwise the upload becomes the "
                "current backup and the previous one is deleted. 404 when no upload is pending."
            ),
        ),
        Endpoint(
            "GET",
            _PATH,
            get_backup,
            "The caller's current backup: its size, SHA-256, time, and a short-lived download URL.",
            TAG,
            responses={200: BackupDownload},
            errors=(404,),
            description=(
                "The URL is a presigned GET to the object store, valid for "
                "`VEIL_ATTACHMENT_DOWNLOAD_URL_TTL` (5 minutes by default), whose answer is always "
                "`application/octet-stream` as an attachment. Any session of the user may fetch it "
                "(a backup is restored on a new device). 404 when the user has no completed backup."
            ),
        ),
        Endpoint(
            "DELETE",
            _PATH,
            delete_backup,
            "Delete the caller's backup and any unfinished upload, objects and records.",
            TAG,
            responses={204: None},
            description="Also 204 when there was nothing to delete.",
        ),
    ],
    build=build,
)
