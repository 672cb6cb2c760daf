"""Password reset and password change are services like the others: each built once when its
process starts (a ServiceModule with a `build`), not constructed again in every request handler."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from veil.account.password import PasswordChange
from veil.auth.recovery import PasswordRecovery
from veil.core.config import Environment, Settings
from veil.core.security.ratelimit import MemoryRateLimiter
from veil.core.web.app import ServiceModule
from veil.gateway.app import SERVICES


def module_serving(service: str, path: str) -> ServiceModule:
    (module,) = [m for m in SERVICES[service] if any(ep.path == path for ep in m.endpoints)]
    return module


@pytest.mark.parametrize(
    ("service", "paths", "built"),
    [
        ("auth", ("/v1/auth/password-reset", "/v1/auth/password-reset/confirm"), PasswordRecovery),
        ("account", ("/v1/account/password",), PasswordChange),
    ],
)
def test_the_password_services_are_built_once_per_process(
    service: str, paths: tuple[str, ...], built: type
) -> None:
    modules = {module_serving(service, path).name for path in paths}
    assert len(modules) == 1
    module = module_serving(service, paths[0])
    # Its module builds the service object (state slot named after the module) at start-up.
    assert module.build is not None
    resources: Any = SimpleNamespace(
        settings=Settings(environment=Environment.TEST),
        db=object(),
        passwords=object(),
        limiter=MemoryRateLimiter(),
        sessions=object(),
        clock=object(),
    )
    assert isinstance(module.build(resources), built)
    # Its only endpoints are the service's own.
    assert {ep.path for ep in module.endpoints} == set(paths)
