"""Account routes: parse, one service call, respond."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from veil.account.schemas import (
    AccountView,
    Confirm,
    Confirmed,
    DownloadLink,
    EmailChangeRequest,
    ErasureRequest,
    ErasureScheduled,
    NewRequest,
    RequestAccepted,
)
from veil.account.service import AccountLimits, AccountService
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, state_of
from veil.core.web.params import path_uuid

TAG = "account"


def _service(request: Request) -> AccountService:
    service: AccountService = state_of(request, "account")
    return service


async def get_account(request: Request, principal: Principal) -> Response:
    account = await _service(request).account(principal)
    return json_response(
        AccountView(
            user_id=account.id,
            email=account.email,
            email_verified=account.email_verified,
            created_at=account.created_at,
            status=account.status,
        )
    )


async def new_request(request: Request, principal: Principal, body: NewRequest) -> Response:
    spec = body.root
    password = spec.password if isinstance(spec, ErasureRequest | EmailChangeRequest) else None
    new_email = spec.new_email if isinstance(spec, EmailChangeRequest) else None
    request_id = await _service(request).request(principal, spec.type, password=password, new_email=new_email)
    return json_response(RequestAccepted(request_id=request_id), status=202)


async def confirm(request: Request, principal: Principal, body: Confirm) -> Response:
    done = await _service(request).confirm(principal, path_uuid(request, "request_id"), body.code)
    if done.type == "erasure":
        assert done.purge_after is not None
        return json_response(ErasureScheduled(type="erasure", purge_after=done.purge_after), status=202)
    if done.type == "export":
        assert done.download_url is not None and done.expires_at is not None
        link = DownloadLink(url=done.download_url, expires_at=done.expires_at)
        return json_response(Confirmed(type="export", download=link))
    account = await _service(request).account(principal)
    return json_response(Confirmed(type="email_change", email=account.email))


def build(resources: Resources) -> AccountService:
    settings = resources.settings
    return AccountService(
        resources.db,
        resources.blobs,
        resources.mailer,
        resources.passwords,
        resources.limiter,
        resources.clock,
        AccountLimits(
            code_ttl=timedelta(seconds=settings.account_code_ttl_seconds),
            max_attempts=settings.account_code_attempts,
            erasure_grace=timedelta(days=settings.erasure_grace_days),
            export_url_ttl=settings.export_url_ttl_seconds,
            requests=Rate.per_window(settings.account_requests_per_hour, 3600),
        ),
    )


MODULE = ServiceModule(
    "account",
    [
        Endpoint(
            "GET",
            "/v1/account",
            get_account,
            "The caller's account.",
            TAG,
            responses={200: AccountView},
            errors=(404,),
        ),
        Endpoint(
            "POST",
            "/v1/account/requests",
            new_request,
            "Ask for an export, erasure or email change; a six-digit code is emailed to confirm it.",
            TAG,
            body=NewRequest,
            responses={202: RequestAccepted},
            errors=(403, 404, 409),
            rate_limited=True,
        ),
        Endpoint(
            "POST",
            "/v1/account/requests/{request_id}/confirm",
            confirm,
            "Confirm a request with its code: export 200 (a download URL), erasure 202, email change 200.",
            TAG,
            body=Confirm,
            responses={200: Confirmed, 202: ErasureScheduled},
            errors=(400, 404, 409),
        ),
    ],
    build=build,
)
