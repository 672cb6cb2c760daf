from ipaddress import ip_network

import pytest
from pydantic import ValidationError

from veil.core.config import Settings

PRODUCTION = {
    "VEIL_ENV": "production",
    "DATABASE_URL": "postgresql://veil@db/veil",
    "S3_ENDPOINT": "https://s3.eu-central-1.amazonaws.com",
    "S3_ACCESS_KEY": "AKIAEXAMPLEKEY",
    "S3_SECRET_KEY": "a-real-looking-secret-value",
    "VEIL_JWT_KEYS_FILE": "/run/secrets/jwt-keys.json",
    "VEIL_TRANSPARENCY_KEYS_FILE": "/run/secrets/transparency-keys.json",
    "SMTP_HOST": "smtp.example.eu",
}


def test_production_with_everything_set_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    assert Settings().is_production


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DATABASE_URL", None),
        ("S3_ENDPOINT", None),
        ("S3_SECRET_KEY", None),
        ("S3_SECRET_KEY", "changeme"),
        ("S3_ACCESS_KEY", "minioadmin"),
        ("VEIL_RATE_LIMITS", "off"),
        ("SMTP_HOST", None),
        ("VEIL_TRANSPARENCY_KEYS_FILE", None),
    ],
)
def test_production_refuses_missing_or_placeholder_values(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str | None
) -> None:
    for name, setting in PRODUCTION.items():
        monkeypatch.setenv(name, setting)
    if value is None:
        monkeypatch.delenv(key)
    else:
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="production configuration refused"):
        Settings()


def test_development_needs_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in PRODUCTION:
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    assert settings.uses_embedded_postgres and settings.uses_embedded_s3
    assert settings.port == 8443


def test_trusted_proxies_are_parsed_as_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8")
    assert Settings().trusted_proxies == (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"))


def test_invalid_values_are_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    "variable",
    [
        "VEIL_RETENTION_MESSAGES_DAYS",
        "VEIL_RETENTION_ATTACHMENTS_DAYS",
        "VEIL_RETENTION_SESSIONS_DAYS",
        "VEIL_RETENTION_LOGS_DAYS",
        "VEIL_DEVICE_MESSAGE_TTL_DAYS",
    ],
)
def test_retention_is_at_most_30_days_in_development_and_90_in_production(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "30")
    assert Settings().retention_days()[variable] == 30
    monkeypatch.setenv(variable, "31")
    with pytest.raises(ValidationError, match="at most 30 in development"):
        Settings()
    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(variable, "90")
    assert Settings().retention_days()[variable] == 90
    monkeypatch.setenv(variable, "91")
    with pytest.raises(ValidationError, match="at most 90 in production"):
        Settings()


@pytest.mark.parametrize(
    "key", ["VEIL_ATTACHMENT_UPLOAD_URL_TTL", "VEIL_ATTACHMENT_DOWNLOAD_URL_TTL", "VEIL_EXPORT_URL_TTL"]
)
def test_presigned_urls_live_at_most_300_seconds(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv(key, "300")
    Settings()
    monkeypatch.setenv(key, "301")
    with pytest.raises(ValidationError, match="less than or equal to 300"):
        Settings()
