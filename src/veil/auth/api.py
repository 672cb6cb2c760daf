"""Auth routes: parse, one service call, respond."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from veil.auth.recovery import PasswordRecovery, RecoveryLimits
from veil.auth.schemas import (
    Accepted,
    JsonWebKeySet,
    LoginRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
    SessionList,
    SessionView,
    TokenPair,
    VerifyRegistrationRequest,
)
from veil.auth.service import AuthLimits, AuthService, ClientInfo, IssuedTokens
from veil.auth.signup import SignupPolicy, SignupService
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, no_content, state_of
from veil.core.web.params import path_uuid

TAG = "auth"


def _service(request: Request) -> AuthService:
    service: AuthService = state_of(request, "auth")
    return service


def _client(request: Request) -> ClientInfo:
    return ClientInfo(ip=request.state.client_ip, user_agent=request.headers.get("user-agent"))


def _pair(issued: IssuedTokens) -> Response:
    return json_response(TokenPair(**issued.__dict__))


def _signup(request: Request) -> SignupService:
    service: SignupService = state_of(request, "signup")
    return service


async def register(request: Request, body: RegisterRequest) -> Response:
    await _service(request).check_client_rate(_client(request))
    await _signup(request).request(body.email, body.password, body.invite_code)
    return json_response(Accepted(), status=202)


async def verify_registration(request: Request, body: VerifyRegistrationRequest) -> Response:
    await _service(request).check_client_rate(_client(request))
    user_id = await _signup(request).verify(body.email, body.code)
    return json_response(RegisterResponse(user_id=user_id), status=201)


async def login(request: Request, body: LoginRequest) -> Response:
    service, client = _service(request), _client(request)
    await service.check_client_rate(client)
    issued = await service.login(body.email, body.password, body.device_name, client, body.device_token)
    return _pair(issued)


async def refresh(request: Request, body: RefreshRequest) -> Response:
    service, client = _service(request), _client(request)
    await service.check_client_rate(client)
    return _pair(await service.refresh(body.refresh_token, client))


def _recovery(request: Request) -> PasswordRecovery:
    recovery: PasswordRecovery = state_of(request, "recovery")
    return recovery


async def request_password_reset(request: Request, body: PasswordResetRequest) -> Response:
    await _service(request).check_client_rate(_client(request))
    await _recovery(request).request(body.email)
    return json_response(Accepted(), status=202)


async def confirm_password_reset(request: Request, body: PasswordResetConfirm) -> Response:
    client = _client(request)
    await _service(request).check_client_rate(client)
    await _recovery(request).confirm(body.email, body.code, body.new_password, client.ip)
    return no_content()


async def logout(request: Request, principal: Principal) -> Response:
    await _service(request).logout(principal)
    return no_content()


async def list_sessions(request: Request, principal: Principal) -> Response:
    records = await _service(request).sessions(principal)
    items = [
        SessionView(
            session_id=r.id,
            device_name=r.device_name,
            ip=r.ip,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            current=r.id == principal.session_id,
        )
        for r in records
    ]
    return json_response(SessionList(items=items))


async def revoke_session(request: Request, principal: Principal) -> Response:
    await _service(request).revoke_session(principal, path_uuid(request, "session_id"))
    return no_content()


async def jwks(request: Request) -> Response:
    resources: Resources = state_of(request, "resources")
    return json_response(JsonWebKeySet.model_validate(resources.signing_keys.public_jwks()))


def build(resources: Resources) -> AuthService:
    settings = resources.settings
    return AuthService(
        resources.db,
        resources.passwords,
        resources.tokens,
        resources.limiter,
        resources.sessions,
        resources.clock,
        limits=AuthLimits(
            per_ip=Rate(settings.auth_rate_per_second, settings.auth_rate_burst),
            failed_logins_per_account=Rate.per_window(
                settings.login_failures_allowed, settings.login_failure_window_seconds
            ),
        ),
        refresh_ttl=timedelta(days=settings.refresh_token_ttl_days),
        device_token_ttl=timedelta(days=settings.device_token_ttl_days),
        metrics=resources.metrics,
    )


def build_signup(resources: Resources) -> SignupService:
    settings = resources.settings
    return SignupService(
        resources.db,
        resources.passwords,
        resources.limiter,
        resources.clock,
        SignupPolicy(
            mode=settings.registration,
            code_ttl=timedelta(seconds=settings.account_code_ttl_seconds),
            max_attempts=settings.account_code_attempts,
            mails_per_address=Rate.per_window(settings.signup_mails_per_hour, 3600),
        ),
    )


def build_recovery(resources: Resources) -> PasswordRecovery:
    settings = resources.settings
    return PasswordRecovery(
        resources.db,
        resources.passwords,
        resources.limiter,
        resources.sessions,
        resources.clock,
        RecoveryLimits(
            code_ttl=timedelta(seconds=settings.password_reset_ttl_seconds),
            max_attempts=settings.password_reset_attempts,
            requests_per_address=Rate.per_window(settings.password_resets_per_hour, 3600),
        ),
    )


MODULE = ServiceModule(
    "auth",
    [
        Endpoint(
            "POST",
            "/v1/auth/login",
            login,
            "Sign in; returns a token pair bound to a new session.",
            TAG,
            body=LoginRequest,
            responses={200: TokenPair},
            errors=(401,),
            authenticated=False,
            rate_limited=True,
        ),
        Endpoint(
            "POST",
            "/v1/auth/refresh",
            refresh,
            "Rotate the refresh token; returns a new pair.",
            TAG,
            body=RefreshRequest,
            responses={200: TokenPair},
            errors=(401,),
            authenticated=False,
            rate_limited=True,
        ),
        Endpoint("POST", "/v1/auth/logout", logout, "End the caller's session.", TAG, responses={204: None}),
        Endpoint(
            "GET",
            "/v1/auth/sessions",
            list_sessions,
            "The caller's active sessions.",
            TAG,
            responses={200: SessionList},
        ),
        Endpoint(
            "DELETE",
            "/v1/auth/sessions/{session_id}",
            revoke_session,
            "End one of the caller's sessions.",
            TAG,
            responses={204: None},
            errors=(404,),
        ),
        Endpoint(
            "GET",
            "/v1/auth/jwks",
            jwks,
            "Public keys that verify access tokens.",
            TAG,
            responses={200: JsonWebKeySet},
            authenticated=False,
            touches_backend=False,
        ),
    ],
    build=build,
)

# Sign-up is its own module (its own service object) in the auth process: veil.auth.signup.
SIGNUP_MODULE = ServiceModule(
    "signup",
    [
        Endpoint(
            "POST",
            "/v1/auth/register",
            register,
            "Start a sign-up: a six-digit code is mailed to the address (to an existing account's owner, "
            "a notice instead). The answer is the same either way; the account is created by "
            "/v1/auth/register/verify. `invite_code` is required when registration is invite-only; "
            "closed registration is 403.",
            TAG,
            body=RegisterRequest,
            responses={202: Accepted},
            errors=(403,),
            authenticated=False,
            rate_limited=True,
        ),
        Endpoint(
            "POST",
            "/v1/auth/register/verify",
            verify_registration,
            "Finish a sign-up with the emailed code: creates the account. A wrong, expired or used code, "
            "or an address that already has an account, is the same 400.",
            TAG,
            body=VerifyRegistrationRequest,
            responses={201: RegisterResponse},
            errors=(400, 403),
            authenticated=False,
            rate_limited=True,
        ),
    ],
    build=build_signup,
)

# Password reset is its own module too (its own service object, veil.auth.recovery), built once.
RECOVERY_MODULE = ServiceModule(
    "recovery",
    [
        Endpoint(
            "POST",
            "/v1/auth/password-reset",
            request_password_reset,
            "Ask for a password reset: a six-digit code is emailed if an active account has the "
            "address; the answer is the same either way.",
            TAG,
            body=PasswordResetRequest,
            responses={202: Accepted},
            authenticated=False,
            rate_limited=True,
        ),
        Endpoint(
            "POST",
            "/v1/auth/password-reset/confirm",
            confirm_password_reset,
            "Set a new password with the emailed code; every session of the account ends and its "
            "devices are removed. Any code that does not work is the same 400.",
            TAG,
            body=PasswordResetConfirm,
            responses={204: None},
            errors=(400,),
            authenticated=False,
            rate_limited=True,
        ),
    ],
    build=build_recovery,
)
