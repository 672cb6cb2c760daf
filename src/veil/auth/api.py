"""Auth routes: parse, one service call, respond."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from veil.auth.schemas import (
    JsonWebKeySet,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
    SessionList,
    SessionView,
    TokenPair,
)
from veil.auth.service import AuthLimits, AuthService, ClientInfo, IssuedTokens
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


async def register(request: Request, body: RegisterRequest) -> Response:
    service = _service(request)
    await service.check_client_rate(_client(request))
    user_id = await service.register(body.email, body.password)
    return json_response(RegisterResponse(user_id=user_id), status=201)


async def login(request: Request, body: LoginRequest) -> Response:
    service, client = _service(request), _client(request)
    await service.check_client_rate(client)
    return _pair(await service.login(body.email, body.password, body.device_name, client))


async def refresh(request: Request, body: RefreshRequest) -> Response:
    service, client = _service(request), _client(request)
    await service.check_client_rate(client)
    return _pair(await service.refresh(body.refresh_token, client))


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
        resources.clock,
        limits=AuthLimits(
            per_ip=Rate(settings.auth_rate_per_second, settings.auth_rate_burst),
            failed_logins_per_account=Rate.per_window(
                settings.login_failures_allowed, settings.login_failure_window_seconds
            ),
        ),
        refresh_ttl=timedelta(days=settings.refresh_token_ttl_days),
    )


MODULE = ServiceModule(
    "auth",
    [
        Endpoint(
            "POST",
            "/v1/auth/register",
            register,
            "Create an account.",
            TAG,
            body=RegisterRequest,
            responses={201: RegisterResponse},
            errors=(409,),
            authenticated=False,
            rate_limited=True,
        ),
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
