"""Configuration: read from the environment (and `.env` in development), validated once at start.

Every variable is documented in `.env.example`. Nothing here reads the environment at import time;
`load_settings()` is called by the entry points and the result is passed down explicitly.
"""

from __future__ import annotations

import os
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = IPv4Network | IPv6Network

# Values that only ever appear in examples: production refuses to start with any of them.
_PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "minioadmin", "password"})


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ConfigurationError(Exception):
    """The configuration is refused: `problems` holds one line per problem, naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Refused(ValueError):
    """Several problems found by one check, kept apart so that each gets its own line."""

    def __init__(self, heading: str, problems: list[str], context: str) -> None:
        super().__init__(f"{heading}: " + "; ".join(problems))
        self.problems = [f"{problem} ({context})" for problem in problems]


def configuration_problems(error: ValidationError) -> list[str]:
    """One line per problem, `VARIABLE: what is wrong`. The value itself is left out: it may be a
    secret (a database URL with its password)."""
    lines: list[str] = []
    for detail in error.errors(include_url=False, include_input=False):
        cause = detail.get("ctx", {}).get("error")
        if isinstance(cause, _Refused):
            lines += cause.problems
            continue
        message = str(cause) if isinstance(cause, ValueError) else detail["msg"]
        variable = ".".join(str(part) for part in detail["loc"])
        lines.append(f"{variable}: {message}" if variable else message)
    return lines


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """The whole configuration of a Veil process. Immutable once loaded."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True, populate_by_name=True)

    environment: Environment = Field(Environment.DEVELOPMENT, validation_alias=_env("VEIL_ENV"))
    host: str = Field("127.0.0.1", validation_alias=_env("VEIL_HOST"))
    port: int = Field(8443, ge=0, le=65535, validation_alias=_env("VEIL_PORT"))
    data_dir: Path = Field(Path(".data"), validation_alias=_env("VEIL_DATA_DIR"))
    # Processes serving the one port (SO_REUSEPORT); unset: one per core. They share everything
    # through PostgreSQL, like separate processes behind the gateway; /metrics describes the worker
    # that answers, so a deployment that scrapes one address per process sets 1.
    workers: int | None = Field(None, ge=1, le=64, validation_alias=_env("VEIL_WORKERS"))

    # TLS: certificate and key files. Unset in development: a private CA and certificate are made
    # under `<data_dir>/tls`. Unset in production: the process serves plain HTTP and must sit behind
    # the TLS-terminating gateway (see deploy/).
    tls_cert_file: Path | None = Field(None, validation_alias=_env("VEIL_TLS_CERT_FILE"))
    tls_key_file: Path | None = Field(None, validation_alias=_env("VEIL_TLS_KEY_FILE"))

    # PostgreSQL. Unset in development and tests: a private embedded server is started.
    database_url: SecretStr | None = Field(None, validation_alias=_env("DATABASE_URL"))
    db_pool_max_size: int = Field(20, ge=1, validation_alias=_env("VEIL_DB_POOL_MAX"))
    # Upper bound on any single statement and on waiting for a connection: a hung database turns
    # into a 503 after this long instead of a hung request.
    db_timeout_seconds: float = Field(5.0, gt=0, validation_alias=_env("VEIL_DB_TIMEOUT"))

    # S3-compatible object store. Unset endpoint in development and tests: a private server starts.
    s3_endpoint: str | None = Field(None, validation_alias=_env("S3_ENDPOINT"))
    s3_access_key: SecretStr | None = Field(None, validation_alias=_env("S3_ACCESS_KEY"))
    s3_secret_key: SecretStr | None = Field(None, validation_alias=_env("S3_SECRET_KEY"))
    s3_bucket: str = Field("veil-attachments", validation_alias=_env("S3_BUCKET"))
    s3_region: str = Field("eu-central-1", validation_alias=_env("S3_REGION"))
    s3_timeout_seconds: float = Field(5.0, gt=0, validation_alias=_env("S3_TIMEOUT"))
    # The store's address as clients reach it, if not S3_ENDPOINT (presigned URLs sign the host).
    s3_public_endpoint: str | None = Field(None, validation_alias=_env("S3_PUBLIC_ENDPOINT"))

    # Attachments: largest ciphertext per file (a larger declared size is a 413), per-user quotas
    # (429 beyond them), and how long presigned URLs and unfinished reservations live.
    attachment_max_bytes: int = Field(
        50 * 1024 * 1024, ge=1, le=5 * 1024**3, validation_alias=_env("VEIL_ATTACHMENT_MAX_BYTES")
    )
    attachment_quota_bytes: int = Field(1024**3, ge=1, validation_alias=_env("VEIL_ATTACHMENT_QUOTA_BYTES"))
    attachment_pending_max: int = Field(10, ge=1, validation_alias=_env("VEIL_ATTACHMENT_PENDING_MAX"))
    # A presigned URL is a bearer credential that leaks with logs, proxies and browser history, so
    # upload and download URLs live at most 5 minutes; the store checks expiry when a request
    # starts, so a slow 50 MiB upload begun in time still completes.
    attachment_upload_url_ttl_seconds: int = Field(
        300, ge=1, le=300, validation_alias=_env("VEIL_ATTACHMENT_UPLOAD_URL_TTL")
    )
    attachment_reservation_ttl_seconds: int = Field(
        3600, ge=1, le=7 * 86400, validation_alias=_env("VEIL_ATTACHMENT_RESERVATION_TTL")
    )
    attachment_download_url_ttl_seconds: int = Field(
        300, ge=1, le=300, validation_alias=_env("VEIL_ATTACHMENT_DOWNLOAD_URL_TTL")
    )

    # The encrypted backup slot (docs/adr/0021): largest backup ciphertext (a larger declared size
    # is a 413; the store's gateway in deploy/ caps bodies at 128 MiB), and upload reservations per
    # user per hour, each of which may be that large. Its URLs and reservations live as long as the
    # attachments' (VEIL_ATTACHMENT_*_TTL above).
    backup_max_bytes: int = Field(
        100 * 1024 * 1024, ge=1, le=5 * 1024**3, validation_alias=_env("VEIL_BACKUP_MAX_BYTES")
    )
    backups_per_hour: int = Field(10, ge=1, validation_alias=_env("VEIL_BACKUPS_PER_HOUR"))

    # Outgoing mail (challenge codes, notices). Unset host in development and tests: a local mail
    # sink starts and writes every message under `<data_dir>/mail`.
    smtp_host: str | None = Field(None, validation_alias=_env("SMTP_HOST"))
    smtp_port: int = Field(587, ge=1, le=65535, validation_alias=_env("SMTP_PORT"))
    smtp_username: str | None = Field(None, validation_alias=_env("SMTP_USERNAME"))
    smtp_password: SecretStr | None = Field(None, validation_alias=_env("SMTP_PASSWORD"))
    smtp_starttls: bool = Field(False, validation_alias=_env("SMTP_STARTTLS"))
    mail_from: str = Field("Veil <no-reply@veil.localhost>", validation_alias=_env("MAIL_FROM"))
    # The mail outbox (docs/adr/0014): attempts per mail before it is dropped (and the failure
    # logged), and the backoff between attempts, doubling from the first delay up to the cap. The
    # defaults keep trying for about an hour, beyond which a one-time code has long expired.
    mail_attempts: int = Field(8, ge=1, le=50, validation_alias=_env("VEIL_MAIL_ATTEMPTS"))
    mail_retry_first_seconds: float = Field(
        30.0, gt=0, le=3600, validation_alias=_env("VEIL_MAIL_RETRY_FIRST")
    )
    mail_retry_max_seconds: float = Field(
        1800.0, gt=0, le=86400, validation_alias=_env("VEIL_MAIL_RETRY_MAX")
    )

    # Data-subject requests: how long an emailed code lives and how many wrong tries it allows,
    # requests per user per hour, how long an export download URL lives, and the grace window
    # between a confirmed erasure (account disabled at once) and the purge.
    account_code_ttl_seconds: int = Field(
        900, ge=60, le=86400, validation_alias=_env("VEIL_ACCOUNT_CODE_TTL")
    )
    account_code_attempts: int = Field(5, ge=1, le=20, validation_alias=_env("VEIL_ACCOUNT_CODE_ATTEMPTS"))
    account_requests_per_hour: int = Field(5, ge=1, validation_alias=_env("VEIL_ACCOUNT_REQUESTS_PER_HOUR"))
    # One export download URL lives at most 5 minutes (a bearer credential, as for attachments);
    # the archive itself stays for VEIL_EXPORT_ARCHIVE_TTL, and GET /v1/account/requests/{id}
    # presigns a fresh URL whenever it is asked, until then.
    export_url_ttl_seconds: int = Field(300, ge=1, le=300, validation_alias=_env("VEIL_EXPORT_URL_TTL"))
    export_archive_ttl_seconds: int = Field(
        900, ge=60, le=86400, validation_alias=_env("VEIL_EXPORT_ARCHIVE_TTL")
    )
    erasure_grace_days: int = Field(30, ge=0, le=30, validation_alias=_env("VEIL_ERASURE_GRACE_DAYS"))
    # How long confirming an export waits for the background build before answering 202.
    export_wait_seconds: float = Field(10.0, ge=0, le=60, validation_alias=_env("VEIL_EXPORT_WAIT"))

    # Password reset by email: how long a code lives and how many wrong tries it allows, and reset
    # mails per address per hour (counted for unknown addresses too, so nobody can mail-bomb an
    # address and a 429 reveals nothing). Password changes per user per hour, right or wrong:
    # each one costs an Argon2 check against a stolen access token's guesses.
    password_reset_ttl_seconds: int = Field(
        900, ge=60, le=3600, validation_alias=_env("VEIL_PASSWORD_RESET_TTL")
    )
    password_reset_attempts: int = Field(
        5, ge=1, le=20, validation_alias=_env("VEIL_PASSWORD_RESET_ATTEMPTS")
    )
    password_resets_per_hour: int = Field(5, ge=1, validation_alias=_env("VEIL_PASSWORD_RESETS_PER_HOUR"))
    password_changes_per_hour: int = Field(10, ge=1, validation_alias=_env("VEIL_PASSWORD_CHANGES_PER_HOUR"))

    # Retention, in days: messages, attachments, ended sessions (and their devices' records), and
    # the logs the deployment keeps. At most 30 in development and tests, 90 in production.
    retention_messages_days: int = Field(30, ge=1, validation_alias=_env("VEIL_RETENTION_MESSAGES_DAYS"))
    retention_attachments_days: int = Field(
        30, ge=1, validation_alias=_env("VEIL_RETENTION_ATTACHMENTS_DAYS")
    )
    retention_sessions_days: int = Field(30, ge=1, validation_alias=_env("VEIL_RETENTION_SESSIONS_DAYS"))
    retention_logs_days: int = Field(30, ge=1, validation_alias=_env("VEIL_RETENTION_LOGS_DAYS"))

    # Access-token signing keys: a JSON file {"active": kid, "keys": [private P-256 JWKs]}.
    # Unset in development: generated under the data directory. Rotation: docs/adr/0007.
    jwt_keys_file: Path | None = Field(None, validation_alias=_env("VEIL_JWT_KEYS_FILE"))
    # The key-transparency log's Ed25519 signing keys: a JSON file {"active": kid, "keys": [...]}
    # (veil.transparency.head). Unset in development and tests: generated under the data
    # directory. Rotation: `veil transparency rotate-key`, docs/adr/0019.
    transparency_keys_file: Path | None = Field(None, validation_alias=_env("VEIL_TRANSPARENCY_KEYS_FILE"))
    jwt_issuer: str = Field("veil", validation_alias=_env("VEIL_JWT_ISSUER"))
    jwt_audience: str = Field("veil-api", validation_alias=_env("VEIL_JWT_AUDIENCE"))
    access_token_ttl_seconds: int = Field(900, gt=0, le=3600, validation_alias=_env("VEIL_ACCESS_TTL"))
    refresh_token_ttl_days: int = Field(30, gt=0, le=90, validation_alias=_env("VEIL_REFRESH_TTL_DAYS"))
    # Argon2id time cost; memory is 64 MiB and parallelism 2 (docs/adr/0006).
    argon2_time_cost: int = Field(1, ge=1, le=10, validation_alias=_env("VEIL_ARGON2_TIME_COST"))

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias=_env("VEIL_LOG_LEVEL")
    )
    # `json`: one JSON object per line, for log collectors (production). `console`: readable lines
    # for a terminal (`make run`). Both redact the same way (veil.core.logging).
    log_format: Literal["json", "console"] = Field("json", validation_alias=_env("VEIL_LOG_FORMAT"))
    # `off` disables every rate limit (benchmarks on a private machine); refused in production.
    rate_limits: Literal["on", "off"] = Field("on", validation_alias=_env("VEIL_RATE_LIMITS"))
    # Keys: devices with keys per account, unclaimed one-time prekeys per device, bundle claims per
    # (claimer, target device) per hour, queued device messages per device and their lifetime.
    max_devices_per_user: int = Field(10, ge=1, validation_alias=_env("VEIL_MAX_DEVICES"))
    max_one_time_prekeys: int = Field(500, ge=1, validation_alias=_env("VEIL_MAX_ONE_TIME_PREKEYS"))
    claims_per_device_per_hour: int = Field(10, ge=1, validation_alias=_env("VEIL_CLAIMS_PER_HOUR"))
    # One-time prekeys one device hands out per hour across all claimers; past it a claim still
    # succeeds, with the signed prekey only (one_time_prekey null), so strangers cannot drain the
    # stock. The owner hears `prekeys_low` below this many left: an hour's worth at the full rate.
    one_time_prekeys_per_device_per_hour: int = Field(
        50, ge=1, validation_alias=_env("VEIL_ONE_TIME_PREKEYS_PER_HOUR")
    )
    # Device-message envelopes one sender (all their devices) may queue per hour, all at once if
    # need be: 2,000 = a session_init and a sender_key for each device of a 100-member group at
    # VEIL_MAX_DEVICES=10 (docs/adr/0008). At least one full request (100 envelopes).
    device_envelopes_per_hour: int = Field(
        2000, ge=100, validation_alias=_env("VEIL_DEVICE_ENVELOPES_PER_HOUR")
    )
    # Unacknowledged envelopes one sender may hold in one device's queue (429 for that sender only).
    device_queue_per_sender: int = Field(100, ge=1, validation_alias=_env("VEIL_DEVICE_QUEUE_PER_SENDER"))
    # Safety cap on one device's whole queue, far above any one sender's share: filling it takes
    # VEIL_DEVICE_QUEUE_CAP / VEIL_DEVICE_QUEUE_PER_SENDER verified accounts (docs/adr/0008).
    device_queue_cap: int = Field(10_000, ge=1, validation_alias=_env("VEIL_DEVICE_QUEUE_CAP"))
    device_message_ttl_days: int = Field(14, ge=1, validation_alias=_env("VEIL_DEVICE_MESSAGE_TTL_DAYS"))
    # Largest ciphertext of one envelope, in bytes (a larger one is a 413).
    max_ciphertext_bytes: int = Field(
        64 * 1024, ge=1, le=1024 * 1024, validation_alias=_env("VEIL_MAX_CIPHERTEXT")
    )

    # Message sends per user per minute, shared by HTTP and WebSocket and all of a user's devices.
    messages_per_minute: int = Field(60, ge=1, validation_alias=_env("VEIL_MESSAGES_PER_MINUTE"))
    # Writes that land in other people's conversation lists (docs/adr/0008): groups created and
    # invitations sent per user per hour, and how many invitations one inviter may have pending
    # (unanswered) with one invitee at a time.
    groups_per_hour: int = Field(20, ge=1, validation_alias=_env("VEIL_GROUPS_PER_HOUR"))
    invitations_per_hour: int = Field(100, ge=1, validation_alias=_env("VEIL_INVITATIONS_PER_HOUR"))
    pending_invitations_per_invitee: int = Field(
        5, ge=1, validation_alias=_env("VEIL_PENDING_INVITATIONS_PER_INVITEE")
    )
    # Origins a browser may open the WebSocket from (comma-separated); clients without an Origin
    # header (native apps) are not affected.
    ws_allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        ("https://localhost:8443",), validation_alias=_env("VEIL_WS_ALLOWED_ORIGINS")
    )
    # How often every open socket's session and memberships are re-read from the database (also
    # whenever the hub's LISTEN connection comes back): a lost notification must not keep a revoked
    # session's socket open or a removed member subscribed for longer than this (docs/adr/0011).
    ws_recheck_seconds: float = Field(30.0, gt=0, le=3600, validation_alias=_env("VEIL_WS_RECHECK_SECONDS"))
    # WebSocket tickets per user, and handshakes per user and per client IP, per minute (all may
    # come at once: a client reconnecting after a network change is not refused).
    ws_tickets_per_minute: int = Field(30, ge=1, validation_alias=_env("VEIL_WS_TICKETS_PER_MINUTE"))
    ws_connects_per_minute: int = Field(30, ge=1, validation_alias=_env("VEIL_WS_CONNECTS_PER_MINUTE"))
    ws_connects_per_ip_per_minute: int = Field(
        60, ge=1, validation_alias=_env("VEIL_WS_CONNECTS_PER_IP_PER_MINUTE")
    )

    # memory: one process only; postgres: shared by every process on the database (default).
    rate_limit_store: Literal["memory", "postgres"] = Field(
        "postgres", validation_alias=_env("VEIL_RATE_LIMIT_STORE")
    )
    # Per client IP on register, login and refresh: a sustained rate and the burst allowed at once.
    auth_rate_per_second: float = Field(5.0, gt=0, validation_alias=_env("VEIL_AUTH_RATE"))
    auth_rate_burst: int = Field(5, ge=1, validation_alias=_env("VEIL_AUTH_BURST"))
    # Failed logins per account (whatever the IP) within the window before login is refused.
    login_failures_allowed: int = Field(10, ge=1, validation_alias=_env("VEIL_LOGIN_FAILURES"))
    login_failure_window_seconds: int = Field(900, ge=1, validation_alias=_env("VEIL_LOGIN_FAILURE_WINDOW"))
    # How long a login's `device_token` marks its client as known (docs/adr/0015).
    device_token_ttl_days: int = Field(180, ge=1, le=400, validation_alias=_env("VEIL_DEVICE_TOKEN_TTL_DAYS"))

    # Who may sign up: anyone (open), holders of an invite code from `veil invites create`
    # (invite), or nobody (closed: 403). Every sign-up confirms its address with an emailed code.
    registration: Literal["open", "invite", "closed"] = Field(
        "open", validation_alias=_env("VEIL_REGISTRATION")
    )
    # Sign-up mails per address per hour (codes and "someone tried your address" notices alike).
    signup_mails_per_hour: int = Field(5, ge=1, validation_alias=_env("VEIL_SIGNUP_MAILS_PER_HOUR"))
    # Peers whose X-Forwarded-For / X-Request-ID are believed (the gateway). Comma-separated CIDRs.
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        (), validation_alias=_env("VEIL_TRUSTED_PROXIES")
    )
    # Seconds SIGTERM waits for in-flight requests before closing what is left.
    shutdown_timeout_seconds: float = Field(20.0, gt=0, validation_alias=_env("VEIL_SHUTDOWN_TIMEOUT"))
    max_request_body_bytes: int = Field(256 * 1024, gt=0, validation_alias=_env("VEIL_MAX_REQUEST_BODY"))

    @field_validator("ws_allowed_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ip_network(part.strip()) for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _reservations_outlive_their_upload_urls(self) -> Settings:
        if self.attachment_reservation_ttl_seconds < self.attachment_upload_url_ttl_seconds:
            raise ValueError(
                "VEIL_ATTACHMENT_RESERVATION_TTL must be at least VEIL_ATTACHMENT_UPLOAD_URL_TTL"
            )
        return self

    @model_validator(mode="after")
    def _retention_within_policy(self) -> Settings:
        ceiling = 90 if self.environment is Environment.PRODUCTION else 30
        for name, days in self.retention_days().items():
            if days > ceiling:
                raise ValueError(f"{name} is {days} days; at most {ceiling} in {self.environment.value}")
        return self

    @model_validator(mode="after")
    def _limits_shared_by_workers(self) -> Settings:
        if self.rate_limit_store == "memory" and self.worker_count > 1:
            raise ValueError(
                "VEIL_RATE_LIMIT_STORE=memory keeps limits per process: use postgres with VEIL_WORKERS > 1"
            )
        return self

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else max(1, os.cpu_count() or 1)

    def retention_days(self) -> dict[str, int]:
        """Every retention period, by the variable that sets it."""
        return {
            "VEIL_RETENTION_MESSAGES_DAYS": self.retention_messages_days,
            "VEIL_DEVICE_MESSAGE_TTL_DAYS": self.device_message_ttl_days,
            "VEIL_RETENTION_ATTACHMENTS_DAYS": self.retention_attachments_days,
            "VEIL_RETENTION_SESSIONS_DAYS": self.retention_sessions_days,
            "VEIL_RETENTION_LOGS_DAYS": self.retention_logs_days,
        }

    @model_validator(mode="after")
    def _production_is_complete(self) -> Settings:
        if self.environment is not Environment.PRODUCTION:
            return self
        problems: list[str] = []
        if self.database_url is None:
            problems.append("DATABASE_URL is required")
        if self.s3_endpoint is None:
            problems.append("S3_ENDPOINT is required")
        for name, secret in (
            ("S3_ACCESS_KEY", self.s3_access_key),
            ("S3_SECRET_KEY", self.s3_secret_key),
        ):
            if secret is None or secret.get_secret_value().lower() in _PLACEHOLDER_SECRETS:
                problems.append(f"{name} is missing or a placeholder")
        if self.jwt_keys_file is None:
            problems.append("VEIL_JWT_KEYS_FILE is required")
        if self.transparency_keys_file is None:
            problems.append("VEIL_TRANSPARENCY_KEYS_FILE is required")
        if self.smtp_host is None:
            problems.append("SMTP_HOST is required")
        if self.rate_limits == "off":
            problems.append("VEIL_RATE_LIMITS=off is refused in production")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("VEIL_TLS_CERT_FILE and VEIL_TLS_KEY_FILE go together")
        if problems:
            raise _Refused("production configuration refused", problems, "VEIL_ENV=production")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def rate_limits_enabled(self) -> bool:
        return self.rate_limits == "on"

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_s3(self) -> bool:
        return self.s3_endpoint is None

    @property
    def uses_mail_sink(self) -> bool:
        return self.smtp_host is None


def load_settings(env_file: Path | None = Path(".env")) -> Settings:
    """Read and validate the configuration once. `.env` is read only if it exists. A refused
    configuration raises `ConfigurationError`, never pydantic's multi-line report."""
    try:
        if env_file is not None and env_file.is_file():
            return Settings(_env_file=env_file)
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(configuration_problems(exc)) from None
