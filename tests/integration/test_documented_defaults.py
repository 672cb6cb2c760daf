"""The numbers operators read agree with the ones that run: `.env.example` with the defaults in
src/veil/core/config.py, deploy/.env.example with deploy/compose.yaml, and the "Sizes and limits"
table of docs/deploy.md with the code, compose.yaml and the Kubernetes base; and the connection
budgets those numbers make stay under PostgreSQL's max_connections."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from veil.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY_ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

ALIASES = {
    str(alias): name
    for name, field in Settings.model_fields.items()
    for alias in getattr(field.validation_alias, "choices", ())
}
_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
_COMPOSE_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")
NOT_SET = "—"


@pytest.fixture(autouse=True)
def _no_settings_from_this_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for alias in ALIASES:
        monkeypatch.delenv(alias, raising=False)


def assignments(path: Path, *, commented: bool) -> dict[str, str]:
    """NAME=value lines of an env file; with `commented`, also `# NAME=value` examples."""
    found = {}
    for line in path.read_text().splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match and (commented or not match[1]):
            found[match[2]] = match[3]
    return found


@cache
def parsed(alias: str, value: str) -> Any:
    """`value` as Veil reads it from the variable `alias`."""
    return getattr(Settings(**{alias: value}), ALIASES[alias])


@cache
def defaults() -> Settings:
    return Settings()


def default(alias: str) -> Any:
    return getattr(defaults(), ALIASES[alias])


@cache
def compose_defaults() -> dict[str, str]:
    """NAME -> default of every ${NAME:-default} in compose.yaml (one default per name)."""
    found: dict[str, str] = {}
    for name, value in _COMPOSE_DEFAULT.findall(COMPOSE_FILE.read_text()):
        assert found.setdefault(name, value) == value, f"compose.yaml has two defaults for {name}"
    return found


@cache
def compose_veil_environment() -> dict[str, Any]:
    environment: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["x-veil"]["environment"]
    return environment


def compose_value(alias: str) -> Any:
    """What a Veil container in compose runs with when deploy/.env leaves `alias` out."""
    given = compose_veil_environment().get(alias)
    if given is not None and "${" not in str(given):  # a value written into compose.yaml itself
        return parsed(alias, str(given))
    match = _COMPOSE_DEFAULT.fullmatch(given) if isinstance(given, str) else None
    return parsed(alias, match[2]) if match else default(alias)


@cache
def compose_max_connections() -> int:
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["postgres"]["command"]
    (setting,) = [word for word in command if word.startswith("max_connections=")]
    return int(setting.partition("=")[2])


@cache
def kubernetes_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((KUBERNETES / resource).read_text())
        if doc
    ]


@cache
def kubernetes_config() -> dict[str, str]:
    (config,) = [doc for doc in kubernetes_documents() if doc["kind"] == "ConfigMap"]
    data: dict[str, str] = config["data"]
    return data


def kubernetes_value(alias: str) -> Any:
    config = kubernetes_config()
    return parsed(alias, config[alias]) if alias in config else default(alias)


def documented_limits() -> list[dict[str, str]]:
    """The rows of the "Sizes and limits" table in docs/deploy.md."""
    text = DEPLOY_DOC.read_text()
    section = text[text.index("## Sizes and limits") :].splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("|"))
    end = next((i for i in range(start, len(section)) if not section[i].startswith("|")), len(section))
    lines = section[start:end]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:4] == ["setting", "Veil's default", "compose", "Kubernetes"], header
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append(dict(zip(["setting", "code", "compose", "kubernetes"], cells, strict=False)))
    return rows


# --- .env.example and the code --------------------------------------------------------------------


def test_env_example_documents_every_setting_with_the_default_of_the_code() -> None:
    written = assignments(ENV_EXAMPLE, commented=True)
    undocumented = sorted(set(ALIASES) - written.keys())
    assert not undocumented, f"settings missing from .env.example: {undocumented}"
    unknown = sorted(set(written) - set(ALIASES))
    assert not unknown, f".env.example names what Veil does not read: {unknown}"
    # Set (uncommented) values are what Veil does when the variable is absent.
    differing = {
        alias: (value, default(alias))
        for alias, value in assignments(ENV_EXAMPLE, commented=False).items()
        if parsed(alias, value) != default(alias)
    }
    assert not differing, f".env.example value, code default: {differing}"


def test_deploy_env_example_gives_the_defaults_of_compose() -> None:
    defaults = compose_defaults()
    written = assignments(DEPLOY_ENV_EXAMPLE, commented=True)
    compose_text = COMPOSE_FILE.read_text()
    for name, value in written.items():
        assert name in ALIASES or re.search(rf"\$\{{{name}\b", compose_text), f"{name}: read by nobody"
        if name in defaults and not value.startswith("sha-"):
            assert value == defaults[name], (
                f"deploy/.env.example {name}={value}, compose.yaml {defaults[name]}"
            )


# --- docs/deploy.md "Sizes and limits" --------------------------------------------------------------


def test_documented_sizes_and_limits_are_the_ones_that_run() -> None:
    rows = documented_limits()
    assert len(rows) >= 10
    defaults = compose_defaults()
    for row in rows:
        alias = row["setting"].strip("`")
        if alias == "max_connections":
            assert row["compose"] == str(compose_max_connections())
            continue
        if alias in ALIASES:
            assert parsed(alias, row["code"]) == default(alias), row
            assert parsed(alias, row["compose"]) == compose_value(alias), row
            assert parsed(alias, row["kubernetes"]) == kubernetes_value(alias), row
        else:  # a setting of the gateway, not of Veil
            assert row["code"] == NOT_SET and row["kubernetes"] == NOT_SET, row
            assert row["compose"] == defaults[alias], row


def test_connection_budgets_stay_under_max_connections() -> None:
    documented = {row["setting"].strip("`"): row for row in documented_limits()}["max_connections"]

    # compose: every Veil container (services and the migration) at its full pool.
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    processes = sum(
        1 for service in services.values() if str(service.get("image", "")).startswith("${VEIL_IMAGE")
    )
    assert processes >= 7
    pool = compose_value("VEIL_DB_POOL_MAX")
    # Each container is one process (the budget would be workers x pool otherwise).
    assert compose_value("VEIL_WORKERS") == kubernetes_value("VEIL_WORKERS") == 1
    assert processes * pool < compose_max_connections()
    # deploy/.env.example states the same budget in words.
    stated = re.search(
        r"(\d+) processes x (\d+) stay under max_connections=(\d+)", DEPLOY_ENV_EXAMPLE.read_text()
    )
    assert stated, "deploy/.env.example: the pool comment"
    assert int(stated[1]) >= processes
    assert (int(stated[2]), int(stated[3])) == (pool, compose_max_connections())

    # Kubernetes: every pod the autoscalers may run, and the migration Job, at their full pool.
    documents = kubernetes_documents()
    pods = sum(doc["spec"]["maxReplicas"] for doc in documents if doc["kind"] == "HorizontalPodAutoscaler")
    pods += sum(1 for doc in documents if doc["kind"] == "Job")
    assert pods * kubernetes_value("VEIL_DB_POOL_MAX") < int(documented["kubernetes"])
    # The CloudNativePG example of docs/deploy.md asks for that many.
    cluster = re.search(r'max_connections: "(\d+)"', DEPLOY_DOC.read_text())
    assert cluster and cluster[1] == documented["kubernetes"]
