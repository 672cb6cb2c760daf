"""Every operation a service publishes reaches that service through the gateway: the nginx
template's locations are matched the way nginx matches them against each path of
`veil.gateway.app.SERVICES`, so a new path that the template forgets (and that would land on the
auth service as a 404) fails here, without nginx installed."""

from __future__ import annotations

import re
from pathlib import Path

from veil.gateway.app import SERVICES

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "veil.conf.template"
_LOCATION = re.compile(r"location\s+(=|~|\^~)?\s*([^\s{]+)\s*\{([^}]*)\}")
_UPSTREAM = re.compile(r"proxy_pass\s+http://veil_(\w+)\s*;")
_PARAM = re.compile(r"{[^}]+}")
_PLACEHOLDER = re.compile(r"\$\{\w+\}")


def locations() -> list[tuple[str, str, str | None]]:
    """(modifier, pattern, upstream service or None) for each location of the template."""
    found = []
    text = _PLACEHOLDER.sub("placeholder", TEMPLATE.read_text())  # their braces are not blocks
    for modifier, pattern, body in _LOCATION.findall(text):
        if pattern.startswith("@"):
            continue
        upstream = _UPSTREAM.search(body)
        found.append((modifier, pattern, upstream[1] if upstream else None))
    return found


def route(path: str) -> str | None:
    """The upstream nginx picks for `path`: an exact match; else the longest prefix if it is `^~`;
    else the first matching regex in file order; else the longest prefix."""
    table = locations()
    for modifier, pattern, upstream in table:
        if modifier == "=" and pattern == path:
            return upstream
    prefixes = [(p, m, u) for m, p, u in table if m in ("", "^~") and path.startswith(p)]
    longest = max(prefixes, key=lambda entry: len(entry[0]), default=None)
    if longest is not None and longest[1] == "^~":
        return longest[2]
    for modifier, pattern, upstream in table:
        if modifier == "~" and re.search(pattern, path):
            return upstream
    return longest[2] if longest else None


def test_every_published_path_reaches_a_process_that_serves_it() -> None:
    serving: dict[str, set[str]] = {}
    for service, modules in SERVICES.items():
        for module in modules:
            for endpoint in module.endpoints:
                serving.setdefault(endpoint.path, set()).add(service)
    assert serving, "no endpoints found"
    misrouted = {}
    for path, services in serving.items():
        concrete = _PARAM.sub("00000000-0000-0000-0000-000000000000", path)
        upstream = route(concrete)
        if upstream not in services:
            misrouted[path] = (upstream, sorted(services))
    assert not misrouted, f"the gateway sends these paths elsewhere (upstream, served by): {misrouted}"


def test_the_matcher_follows_nginx() -> None:
    assert route("/v1/auth/login") == "auth"
    assert route("/v1/ws") == "messaging"
    assert route("/v1/nothing-here") == "auth"  # the catch-all
    assert route("/metrics") is None  # refused at the gateway
