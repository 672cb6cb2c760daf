"""Account routes: parse, one service call, respond."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from veil.account.password import PasswordChange
from veil.account.schemas import (
    AccountView,
    Confirm,
    ConfirmAccepted,
    Confirmed,
    DownloadLink,
    EmailChangeRequest,
    ErasureRequest,
    NewRequest,
    PasswordChangeRequest,
    RequestAccepted,
    RequestView,
)
from veil.account.service import AccountLimits, AccountService, Confirmation
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, no_content, state_of
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
    request_id = path_uuid(request, "request_id")
    done = await _service(request).confirm(principal, request_id, body.code)
    if done.type == "erasure":
        return json_response(ConfirmAccepted(type="erasure", purge_after=done.purge_after), status=202)
    if done.type == "export":
        if done.building:
            return json_response(ConfirmAccepted(type="export", request_id=request_id), status=202)
        return json_response(Confirmed(type="export", download=_link(done)))
    return json_response(Confirmed(type="email_change", email=done.email))


async def get_request(request: Request, principal: Principal) -> Response:
    status = await _service(request).status(principal, path_uuid(request, "request_id"))
    record, export = status.request, status.export
    view = RequestView(
        request_id=record.id,
        type=record.type,
        created_at=record.created_at,
        expires_at=record.expires_at,
        confirmed_at=record.confirmed_at,
        export_status=None if export is None else ("building" if export.building else "ready"),
        download=None if export is None or export.building else _link(export),
    )
    return json_response(view)


async def change_password(request: Request, principal: Principal, body: PasswordChangeRequest) -> Response:
    change: PasswordChange = state_of(request, "password_change")
    await change.change(principal, body.current_password, body.new_password)
    return no_content()


def _link(export: Confirmation) -> DownloadLink:
    assert export.download_url is not None and export.expires_at is not None
    return DownloadLink(url=export.download_url, expires_at=export.expires_at)


def build(resources: Resources) -> AccountService:
    settings = resources.settings
    return AccountService(
        resources.db,
        resources.blobs,
        resources.passwords,
        resources.limiter,
        resources.sessions,
        resources.clock,
        AccountLimits(
            code_ttl=timedelta(seconds=settings.account_code_ttl_seconds),
            max_attempts=settings.account_code_attempts,
            erasure_grace=timedelta(days=settings.erasure_grace_days),
            export_url_ttl=settings.export_url_ttl_seconds,
            export_archive_ttl=settings.export_archive_ttl_seconds,
            export_wait=settings.export_wait_seconds,
            requests=Rate.per_window(settings.account_requests_per_hour, 3600),
        ),
        resources.notifications,
    )


def build_password_change(resources: Resources) -> PasswordChange:
    return PasswordChange(
        resources.db,
        resources.passwords,
        resources.limiter,
        resources.sessions,
        resources.clock,
        Rate.per_window(resources.settings.password_changes_per_hour, 3600),
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
            "Confirm a request with its code: export 200 with a download URL (202 while a large one is "
            "still being built), erasure 202, email change 200.",
            TAG,
            body=Confirm,
            responses={200: Confirmed, 202: ConfirmAccepted},
            errors=(400, 404, 409),
        ),
        Endpoint(
            "GET",
            "/v1/account/requests/{request_id}",
            get_request,
            "One of the caller's requests; for an export, its download once built.",
            TAG,
            responses={200: RequestView},
            errors=(404,),
        ),
    ],
    build=build,
)

# The password change is its own module (its own service object, veil.account.password), built
# once like the others; it runs in the account process.
PASSWORD_MODULE = ServiceModule(
    "password_change",
    [
        Endpoint(
            "POST",
            "/v1/account/password",
            change_password,
            "Change the password, proving the current one; every other session ends (its devices "
            "are removed), the caller's stays.",
            TAG,
            body=PasswordChangeRequest,
            responses={204: None},
            errors=(403, 404),
            rate_limited=True,
        ),
    ],
    build=build_password_change,
)
