"""Composition of the services. One process serving all of them is the development default;
in production each service can run as its own process behind the nginx gateway in `deploy/`."""

from __future__ import annotations

from starlette.applications import Starlette

from veil.core.clock import Clock
from veil.core.config import Settings
from veil.core.web.app import ServiceModule, create_app

# Filled in as services land: each entry is a service's published `ServiceModule`.
SERVICES: dict[str, ServiceModule] = {}


def create_service_app(settings: Settings, name: str, *, clock: Clock | None = None) -> Starlette:
    """One service alone (plus the operational endpoints every process has)."""
    if name == "all":
        return create_app(settings, list(SERVICES.values()), clock=clock)
    return create_app(settings, [SERVICES[name]], clock=clock, title=f"Veil {name}")
