"""Wire models of the Account API."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import Field, RootModel

from veil.auth.schemas import EMAIL_FORMAT
from veil.core.wire import RequestModel, ResponseModel, Timestamp


class AccountView(ResponseModel):
    user_id: uuid.UUID
    email: str
    email_verified: bool
    created_at: Timestamp
    status: Literal["active", "suspended", "disabled"]


class ExportRequest(RequestModel):
    type: Literal["export"]


class ErasureRequest(RequestModel):
    type: Literal["erasure"]
    password: str = Field(max_length=1024)


class EmailChangeRequest(RequestModel):
    type: Literal["email_change"]
    new_email: str = Field(max_length=254, json_schema_extra=EMAIL_FORMAT)
    password: str = Field(max_length=1024)


class NewRequest(
    RootModel[Annotated[ExportRequest | ErasureRequest | EmailChangeRequest, Field(discriminator="type")]]
):
    pass


class RequestAccepted(ResponseModel):
    request_id: uuid.UUID


class Confirm(RequestModel):
    code: str = Field(pattern=r"^[0-9]{6}$", examples=["418302"])


class DownloadLink(ResponseModel):
    url: str
    expires_at: Timestamp


class Confirmed(ResponseModel):
    """Export: where to fetch the archive. Email change: the new login address."""

    type: Literal["export", "email_change"]
    download: DownloadLink | None = None
    email: str | None = None


class ConfirmAccepted(ResponseModel):
    """Erasure: scheduled, purged after `purge_after`. Export: still being built; fetch it with
    `GET /v1/account/requests/{request_id}`."""

    type: Literal["erasure", "export"]
    purge_after: Timestamp | None = None
    request_id: uuid.UUID | None = None


class RequestView(ResponseModel):
    request_id: uuid.UUID
    type: Literal["export", "erasure", "email_change"]
    created_at: Timestamp
    expires_at: Timestamp
    confirmed_at: Timestamp | None
    # Exports only: `building`, then `ready` with a short-lived `download`.
    export_status: Literal["building", "ready"] | None = None
    download: DownloadLink | None = None


class PasswordChangeRequest(RequestModel):
    current_password: str = Field(max_length=1024)
    # As at sign-up: 8 to 128 characters, any Unicode; policy in veil.auth.policy.
    new_password: str = Field(min_length=8, max_length=128)
