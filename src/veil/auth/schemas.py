"""Wire models of the Auth API."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field
from pydantic.config import JsonDict

from veil.core.wire import RequestModel, ResponseModel, Timestamp

# Emails are checked and normalised by veil.auth.policy; the schema says what to send.
EMAIL_FORMAT: JsonDict = {"format": "email"}


class RegisterRequest(RequestModel):
    email: str = Field(max_length=254, json_schema_extra=EMAIL_FORMAT)
    # Length is counted in characters; any Unicode, spaces included. Policy: veil.auth.policy.
    password: str = Field(min_length=8, max_length=128)
    # Required when registration is invite-only (VEIL_REGISTRATION=invite).
    invite_code: str | None = Field(None, min_length=1, max_length=64)


class Accepted(ResponseModel):
    """An empty answer that says the same whatever the server knows (no account oracle)."""


class VerifyRegistrationRequest(RequestModel):
    email: str = Field(max_length=254, json_schema_extra=EMAIL_FORMAT)
    code: str = Field(pattern=r"^[0-9]{6}$", examples=["418302"])


class RegisterResponse(ResponseModel):
    user_id: uuid.UUID


class LoginRequest(RequestModel):
    email: str = Field(max_length=254, json_schema_extra=EMAIL_FORMAT)
    password: str = Field(max_length=1024)
    device_name: str | None = Field(None, max_length=100)
    # From an earlier successful login of this account: the client is a known device, which the
    # account-wide failed-login lock-out never refuses.
    device_token: str | None = Field(None, max_length=256)


class RefreshRequest(RequestModel):
    refresh_token: str = Field(max_length=256)


class TokenPair(ResponseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme name
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: uuid.UUID
    user_id: uuid.UUID
    # Login only (null on refresh): present it in later logins of this account from this client.
    device_token: str | None = None


class SessionView(ResponseModel):
    session_id: uuid.UUID
    device_name: str | None
    ip: str | None
    created_at: Timestamp
    last_seen_at: Timestamp
    current: bool


class SessionList(ResponseModel):
    items: list[SessionView]


class JsonWebKey(ResponseModel):
    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str
    y: str
    kid: str
    use: Literal["sig"]
    alg: Literal["ES256"]


class JsonWebKeySet(ResponseModel):
    keys: list[JsonWebKey]


class PasswordResetRequest(RequestModel):
    email: str = Field(max_length=254, json_schema_extra=EMAIL_FORMAT)


class PasswordResetConfirm(RequestModel):
    email: str = Field(max_length=254, json_schema_extra=EMAIL_FORMAT)
    code: str = Field(pattern=r"^[0-9]{6}$", examples=["418302"])
    # As at sign-up: 8 to 128 characters, any Unicode; policy in veil.auth.policy.
    new_password: str = Field(min_length=8, max_length=128)
