"""The failed-login budgets: they bound password guessing without letting anyone lock others out.

Three budgets of the same size (VEIL_LOGIN_FAILURES per VEIL_LOGIN_FAILURE_WINDOW), each a GCRA key:
- per (account, known device): a login presenting the `device_token` of an earlier successful
  login of that account uses only this one, so a device the owner already used is never locked
  out by anybody else's failures;
- per (account, client address): every other login uses this one, so an address that keeps
  guessing is refused (429) on its own;
- per account: every other login also draws on it; once it is spent, addresses that have failed
  themselves within the window are refused, but an address with no failure of its own in the window
  is still checked, once (a one-per-window "fresh" marker per address). Guessing across addresses
  therefore costs a fresh address per guess per window, and the owner signing in from a new place
  is never refused because of someone else.

Addresses are IPv6 /64 networks (one subscriber's allocation), else the IPv4 address, so a single
host cannot pose as 2^64 fresh addresses.

A slot is taken *before* the password is checked (so concurrent guesses cannot exceed a budget:
the limiter's check-and-take is atomic) and given back when the password was right.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from veil.core.logging import get_logger
from veil.core.problems import too_many_requests
from veil.core.security.ratelimit import Decision, Rate, RateLimiter, limiter_key

log = get_logger("veil.security")


def device_key(email: str, device_token_hash: bytes) -> str:
    return limiter_key("login-failures-device", f"{email}|{device_token_hash.hex()}")


def client_network(ip: str) -> str:
    """The unit a budget counts per: an IPv6 address's /64, an IPv4 address as it is."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def address_key(email: str, ip: str) -> str:
    return limiter_key("login-failures-address", f"{email}|{client_network(ip)}")


def fresh_key(email: str, ip: str) -> str:
    return limiter_key("login-fresh-address", f"{email}|{client_network(ip)}")


def account_key(email: str) -> str:
    return limiter_key("login-failures", email)


@dataclass(frozen=True)
class Admission:
    """The budget slots one login attempt holds until it knows whether the password was right."""

    slots: tuple[tuple[str, Rate], ...]


class LoginThrottle:
    def __init__(self, limiter: RateLimiter, rate: Rate) -> None:
        self._limiter = limiter
        self._rate = rate
        # One unsuccessful attempt per address per window, whatever the account's budget says.
        self._fresh = Rate(per_second=1 / rate.tolerance, burst=1)

    async def admit(self, email: str, ip: str, device_token_hash: bytes | None, now: float) -> Admission:
        """Take this attempt's slots or refuse it with 429. `device_token_hash` only for a token
        known to belong to this account. Keys are made of the canonical email, so unknown and
        existing accounts behave the same."""
        if device_token_hash is not None:
            device = device_key(email, device_token_hash)
            await self._take(device, now, scope="login_failures_device", ip=ip)
            return Admission(((device, self._rate),))

        by_address, by_fresh, by_account = address_key(email, ip), fresh_key(email, ip), account_key(email)
        await self._take(by_address, now, scope="login_failures_address", ip=ip)
        fresh = await self._limiter.hit(by_fresh, self._fresh, now)
        account = await self._limiter.hit(by_account, self._rate, now)
        taken = [(by_address, self._rate)] + ([(by_fresh, self._fresh)] if fresh.allowed else [])
        if account.allowed:
            return Admission((*taken, (by_account, self._rate)))
        if fresh.allowed:
            return Admission(tuple(taken))  # no failure of its own this window: still checked
        await self._limiter.refund(by_address, self._rate, now)
        log.warning("security_event", kind="rate_limited", scope="login_failures", ip=ip)
        raise too_many_requests(account.retry_after_seconds)

    async def give_back(self, admission: Admission, now: float) -> None:
        """The attempt was no failure (the password was right, or it was never checked): its slots
        go back."""
        for key, rate in admission.slots:
            await self._limiter.refund(key, rate, now)

    async def _take(self, key: str, now: float, *, scope: str, ip: str) -> Decision:
        decision = await self._limiter.hit(key, self._rate, now)
        if not decision.allowed:
            log.warning("security_event", kind="rate_limited", scope=scope, ip=ip)
            raise too_many_requests(decision.retry_after_seconds)
        return decision
