"""The failed-login budgets: they bound password guessing without letting anyone lock others out.

Three budgets of the same size (VEIL_LOGIN_FAILURES per VEIL_LOGIN_FAILURE_WINDOW), each a GCRA key:
- per (account, known device): a login presenting the `device_token` of an earlier successful
  login of that account uses only this one, so a device the owner already used is never locked
  out by anybody else's failures;
- per (account, client address): every other login uses this one, so an address that keeps
  guessing is refused (429) on its own;
- per account: every other login also draws on it; once it is spent, addresses that have failed
  themselves are refused, but an address with no failures of its own is still checked. Guessing
  across addresses therefore costs one fresh address per guess, and the owner signing in from a
  new place is never refused because of someone else.

A slot is taken *before* the password is checked (so concurrent guesses cannot exceed a budget:
the limiter's check-and-take is atomic) and given back when the password was right.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.core.logging import get_logger
from veil.core.problems import too_many_requests
from veil.core.security.ratelimit import Decision, Rate, RateLimiter, limiter_key

log = get_logger("veil.security")


def device_key(email: str, device_token_hash: bytes) -> str:
    return limiter_key("login-failures-device", f"{email}|{device_token_hash.hex()}")


def address_key(email: str, ip: str) -> str:
    return limiter_key("login-failures-address", f"{email}|{ip}")


def account_key(email: str) -> str:
    return limiter_key("login-failures", email)


@dataclass(frozen=True)
class Admission:
    """The budget slots one login attempt holds until it knows whether the password was right."""

    keys: tuple[str, ...]


class LoginThrottle:
    def __init__(self, limiter: RateLimiter, rate: Rate) -> None:
        self._limiter = limiter
        self._rate = rate

    async def admit(self, email: str, ip: str, device_token_hash: bytes | None, now: float) -> Admission:
        """Take this attempt's slots or refuse it with 429. `device_token_hash` only for a token
        known to belong to this account. Keys are made of the canonical email, so unknown and
        existing accounts behave the same."""
        if device_token_hash is not None:
            device = device_key(email, device_token_hash)
            await self._take(device, now, scope="login_failures_device", ip=ip)
            return Admission((device,))

        by_address, by_account = address_key(email, ip), account_key(email)
        address = await self._take(by_address, now, scope="login_failures_address", ip=ip)
        account = await self._limiter.hit(by_account, self._rate, now)
        if account.allowed:
            return Admission((by_address, by_account))
        if address.first:
            return Admission((by_address,))  # no failures of its own: still checked
        await self._limiter.refund(by_address, self._rate, now)
        log.warning("security_event", kind="rate_limited", scope="login_failures", ip=ip)
        raise too_many_requests(account.retry_after_seconds)

    async def succeeded(self, admission: Admission, now: float) -> None:
        """The password was right: the attempt was no failure, so its slots go back."""
        for key in admission.keys:
            await self._limiter.refund(key, self._rate, now)

    async def _take(self, key: str, now: float, *, scope: str, ip: str) -> Decision:
        decision = await self._limiter.hit(key, self._rate, now)
        if not decision.allowed:
            log.warning("security_event", kind="rate_limited", scope=scope, ip=ip)
            raise too_many_requests(decision.retry_after_seconds)
        return decision
