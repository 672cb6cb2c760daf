"""A refused configuration reads as one line per problem, naming the variable and never its value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from veil.cli import build_parser
from veil.core.config import Settings, configuration_problems


def problems_of(**variables: str) -> list[str]:
    with pytest.raises(ValidationError) as refused:
        Settings(**variables)  # type: ignore[arg-type]
    return configuration_problems(refused.value)


def test_each_bad_variable_is_one_line_without_its_value() -> None:
    lines = problems_of(VEIL_PORT="hunter2-secret", VEIL_RATE_LIMITS="maybe\nsecret")
    assert len(lines) == 2
    assert lines[0].startswith("VEIL_PORT: ") and lines[1].startswith("VEIL_RATE_LIMITS: ")
    assert not any("secret" in line or "\n" in line for line in lines)


def test_each_missing_production_setting_is_its_own_line() -> None:
    lines = problems_of(VEIL_ENV="production", DATABASE_URL="postgresql://veil:hunter2@db/veil")
    assert "S3_ENDPOINT is required (VEIL_ENV=production)" in lines
    assert "SMTP_HOST is required (VEIL_ENV=production)" in lines
    assert not any("DATABASE_URL" in line or "hunter2" in line for line in lines)


def test_cross_field_rules_name_their_variables() -> None:
    assert problems_of(VEIL_RETENTION_MESSAGES_DAYS="45") == [
        "VEIL_RETENTION_MESSAGES_DAYS is 45 days; at most 30 in development"
    ]

    # Limits kept in one process's memory would be per worker: several workers need the shared store.
    assert problems_of(VEIL_RATE_LIMIT_STORE="memory", VEIL_WORKERS="2") == [
        "VEIL_RATE_LIMIT_STORE=memory keeps limits per process: use postgres with VEIL_WORKERS > 1"
    ]
    assert Settings(VEIL_RATE_LIMIT_STORE="memory", VEIL_WORKERS="1").worker_count == 1  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "argv",
    [[], ["users"], ["users", "find"], ["incidents", "list", "--limit", "0"], ["keys", "generate"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "usage: veil" in capsys.readouterr().err
