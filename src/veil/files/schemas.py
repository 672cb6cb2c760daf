"""Wire models of the attachment API. Sizes and digests are of the ciphertext; nothing here can
carry a file name, a content key or file bytes."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import Field

from veil.core.binary import Base64Bytes
from veil.core.wire import RequestModel, ResponseModel, Timestamp

Sha256 = Annotated[bytes, Base64Bytes(32, 32)]


class Reserve(RequestModel):
    conversation_id: uuid.UUID
    # Exact byte length of the ciphertext; the configured maximum is checked by the service (413).
    size: int = Field(ge=1, le=2**63 - 1)
    sha256: Sha256


class UploadRequest(ResponseModel):
    url: str
    method: Literal["PUT"]
    # Send exactly these with the body: the store checks them against the signature.
    headers: dict[str, str]
    expires_at: Timestamp


class Reservation(ResponseModel):
    attachment_id: uuid.UUID
    upload: UploadRequest


class AttachmentView(ResponseModel):
    attachment_id: uuid.UUID
    size: int
    sha256: Sha256
    created_at: Timestamp


class DownloadRequest(ResponseModel):
    url: str
    expires_at: Timestamp


class AttachmentDownload(AttachmentView):
    download: DownloadRequest
