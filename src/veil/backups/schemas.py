"""Wire models of the backup slot. Sizes and digests are of the ciphertext the client made; nothing
here can carry a key, a passphrase or backup bytes. The upload and download requests have the same
shape as the attachments' (a client uses one code path for both)."""

from __future__ import annotations

from pydantic import Field

from veil.core.wire import RequestModel, ResponseModel, Timestamp
from veil.files.schemas import DownloadRequest, Sha256, UploadRequest


class BackupReserve(RequestModel):
    # Exact byte length of the encrypted backup; the configured maximum is checked by the service (413).
    size: int = Field(ge=1, le=2**63 - 1)
    sha256: Sha256


class BackupReservation(ResponseModel):
    upload: UploadRequest


class BackupView(ResponseModel):
    size: int
    sha256: Sha256
    # When the upload was completed.
    created_at: Timestamp


class BackupDownload(BackupView):
    download: DownloadRequest
