"""Composition of the services. One process serving all of them is the development default;
in production each service can run as its own process behind the nginx gateway in `deploy/`."""

from __future__ import annotations

from starlette.applications import Starlette

from veil import maintenance
from veil.account import api as account_api
from veil.auth import api as auth_api
from veil.backups import api as backups_api
from veil.blocks import api as blocks_api
from veil.core.clock import Clock
from veil.core.config import Settings
from veil.core.mail_delivery import MODULE as MAIL_DELIVERY
from veil.core.web.app import ServiceModule, create_app
from veil.files import api as files_api
from veil.keys import api as keys_api
from veil.messaging import api as messaging_api
from veil.operator import api as operator_api
from veil.realtime import api as realtime_api
from veil.transparency import api as transparency_api

# What `veil serve NAME` runs. Messaging carries the WebSocket, which also delivers device messages,
# so it includes the keys module too; a module may be served by more than one process. Blocks are
# account settings in the user's eyes and light traffic: they share the account process. The
# services that send mail (auth, account) each run a delivery worker for the shared mail outbox.
# The backup slot is stored objects like attachments: the files process serves it.
SERVICES: dict[str, tuple[ServiceModule, ...]] = {
    "auth": (
        auth_api.MODULE,
        auth_api.SIGNUP_MODULE,
        auth_api.RECOVERY_MODULE,
        MAIL_DELIVERY,
        maintenance.MODULE,
    ),
    "keys": (keys_api.MODULE, keys_api.IDENTITY_MODULE, transparency_api.MODULE, maintenance.MODULE),
    "messaging": (messaging_api.MODULE, keys_api.MODULE, realtime_api.MODULE, maintenance.MODULE),
    "files": (files_api.MODULE, backups_api.MODULE, maintenance.MODULE),
    "account": (
        account_api.MODULE,
        account_api.PASSWORD_MODULE,
        blocks_api.MODULE,
        operator_api.MODULE,
        MAIL_DELIVERY,
        maintenance.MODULE,
    ),
}
ALL_MODULES = (
    auth_api.MODULE,
    auth_api.SIGNUP_MODULE,
    auth_api.RECOVERY_MODULE,
    keys_api.MODULE,
    keys_api.IDENTITY_MODULE,
    transparency_api.MODULE,
    messaging_api.MODULE,
    realtime_api.MODULE,
    files_api.MODULE,
    backups_api.MODULE,
    account_api.MODULE,
    account_api.PASSWORD_MODULE,
    blocks_api.MODULE,
    operator_api.MODULE,
    MAIL_DELIVERY,
    maintenance.MODULE,
)


def create_service_app(settings: Settings, name: str, *, clock: Clock | None = None) -> Starlette:
    """One service alone (plus the operational endpoints every process has)."""
    if name == "all":
        return create_app(settings, ALL_MODULES, clock=clock)
    # Behind the gateway every process answers `/v1/openapi.json` (and `/v1/docs`) for the whole API.
    return create_app(settings, SERVICES[name], clock=clock, documented=ALL_MODULES)
