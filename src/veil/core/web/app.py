"""Assembling an ASGI app from service modules.

Each service (auth, keys, messaging, files, account, admin) publishes a `ServiceModule`: its
endpoints and how to build its service object from the shared resources. `create_app` composes
any set of them, so one process can serve one service or, for `make run`, all of them. The
middleware stack is built here in plain sight.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from veil.core.clock import Clock
from veil.core.config import Settings
from veil.core.metrics import Metrics
from veil.core.resources import Resources, open_resources
from veil.core.web.docs import DOCS_ASSET_ROUTES
from veil.core.web.endpoint import Endpoint, routes
from veil.core.web.errors import EXCEPTION_HANDLERS
from veil.core.web.middleware import RequestContext, SecurityHeaders
from veil.core.web.openapi import build_openapi
from veil.core.web.ops import OPS_ENDPOINTS, encode_openapi


@dataclass(frozen=True)
class ServiceModule:
    name: str
    endpoints: Sequence[Endpoint]
    # Builds the service object handlers reach through `request.state.<name>`. If it has
    # `start()` / `close()` coroutines they run with the lifespan; `drain()` runs when the server
    # begins to shut down, before connections are cut (see veil.server).
    build: Callable[[Resources], Any] | None = None
    # Routes that are not JSON operations (the WebSocket).
    extra_routes: Sequence[BaseRoute] = ()


def create_app(
    settings: Settings,
    modules: Sequence[ServiceModule],
    *,
    clock: Clock | None = None,
    title: str = "Veil",
    documented: Sequence[ServiceModule] | None = None,
) -> Starlette:
    """`documented`: the modules the OpenAPI document describes, when not only those served here
    (a process behind the gateway publishes the API the gateway serves, `/v1/docs` included)."""
    endpoints = [*OPS_ENDPOINTS, *(ep for module in modules for ep in module.endpoints)]
    described = [
        *OPS_ENDPOINTS,
        *(ep for module in (modules if documented is None else documented) for ep in module.endpoints),
    ]
    openapi = encode_openapi(build_openapi(described, title=title, version="1"))
    metrics = Metrics()

    drain_hooks: list[Callable[[], Awaitable[None]]] = []

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings, metrics, clock) as resources, AsyncExitStack() as stack:
            state: dict[str, Any] = {"resources": resources, "openapi": openapi}
            for module in modules:
                if module.build is None:
                    continue
                service = state[module.name] = module.build(resources)
                if hasattr(service, "start"):
                    await service.start()
                if hasattr(service, "close"):
                    stack.push_async_callback(service.close)
                if hasattr(service, "drain"):
                    drain_hooks.append(service.drain)
            yield state

    app = Starlette(
        routes=[
            *routes(endpoints, settings.max_request_body_bytes),
            *DOCS_ASSET_ROUTES,
            *(route for module in modules for route in module.extra_routes),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(RequestContext, metrics=metrics, trusted_proxies=settings.trusted_proxies),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # `/v1/x/` is not `/v1/x`: an API path is exact, a redirect would only hide client bugs.
    app.router.redirect_slashes = False
    app.state.drain_hooks = drain_hooks
    return app
