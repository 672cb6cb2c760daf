"""The `veil` command: `veil run` (the whole system for development), `veil serve SERVICE`
(one service process, production shape), `veil migrate`, `veil operator grant|revoke EMAIL` and
`veil invites create [--uses N] [--expires 7d]`, `veil transparency verify` (rebuild the key-transparency
log and check every signed head), `veil transparency rotate-key FILE` and `veil transparency keys FILE`."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from veil import server
from veil.auth.policy import normalize_email
from veil.auth.signup import create_invite
from veil.core.clock import SystemClock
from veil.core.config import Settings, load_settings
from veil.core.db import Database
from veil.core.logging import configure_logging, get_logger
from veil.core.metrics import Metrics
from veil.core.migrations import apply_migrations
from veil.core.problems import BackendUnavailable, Problem
from veil.gateway.app import SERVICES, create_service_app
from veil.operator.service import set_role

log = get_logger("veil.cli")


def _database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise SystemExit("DATABASE_URL is not set")
    return settings.database_url.get_secret_value()


def run_development(settings: Settings) -> None:
    """Start the private PostgreSQL, S3 and mail sink (unless configured elsewhere), migrate, serve
    HTTPS."""
    from veil.devstack.stack import start_dev_stack
    from veil.devstack.tls import ensure_dev_certificates

    stack = asyncio.run(start_dev_stack(settings))
    try:
        settings = stack.settings
        asyncio.run(apply_migrations(_database_url(settings)))
        cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
        ca_note = "your own certificate"
        if cert_file is None or key_file is None:
            certs = ensure_dev_certificates(settings.data_dir)
            cert_file, key_file, ca_note = (
                certs.cert_file,
                certs.key_file,
                str(certs.ca_file.resolve()),
            )
        data_dir = settings.data_dir.resolve()
        mail_note = (
            f"{data_dir / 'mail'}/*.eml (SMTP sink on 127.0.0.1:{settings.smtp_port})"
            if stack.mail is not None
            else f"SMTP {settings.smtp_host}:{settings.smtp_port}"
        )
        print(
            f"\nVeil is starting on https://localhost:{settings.port}\n"
            f"  trust this CA:  {ca_note}\n"
            f"  data:           {data_dir}\n"
            f"  server logs:    {data_dir / 'postgres' / 'postgres.log'}\n"
            f"                  {data_dir / 's3' / 'weed.log'}\n"
            f"  mail:           {mail_note}\n"
            f"  try:            curl --cacert {ca_note} https://localhost:{settings.port}/readyz\n"
            "  stop:           Ctrl-C\n",
            file=sys.stderr,
            flush=True,
        )
        server.run(create_service_app(settings, "all"), settings, cert_file=cert_file, key_file=key_file)
    finally:
        stack.stop()


def serve(settings: Settings, service: str) -> None:
    app = create_service_app(settings, service)
    server.run(app, settings, cert_file=settings.tls_cert_file, key_file=settings.tls_key_file)


def _operator_database_url(settings: Settings) -> str:
    """DATABASE_URL, or in development the database of the running `make run` system."""
    if settings.database_url is not None or settings.is_production:
        return _database_url(settings)
    from veil.devstack.postgres import EmbeddedPostgres
    from veil.devstack.stack import DATABASE_NAME

    postgres = EmbeddedPostgres(settings.data_dir / "postgres")
    if postgres.pid is None:
        raise SystemExit("no database: start the system with `make run`, or set DATABASE_URL")
    return postgres.url(DATABASE_NAME)


@asynccontextmanager
async def _operator_database(settings: Settings) -> AsyncIterator[Database]:
    """A one-connection pool on the operator's database (see `_operator_database_url`)."""
    db = Database(
        _operator_database_url(settings), max_size=1, timeout=settings.db_timeout_seconds, metrics=Metrics()
    )
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def change_operator_role(settings: Settings, email: str, *, grant: bool) -> None:
    """The only way to grant or take away the operator role: from a shell with the database URL,
    never through the API. Recorded in the audit trail."""
    try:
        canonical = normalize_email(email)
    except Problem:
        raise SystemExit(f"not a valid email address: {email}") from None

    async def change() -> uuid.UUID | None:
        async with _operator_database(settings) as db:
            return await set_role(db, SystemClock(), canonical, "operator" if grant else "user")

    try:
        user_id = asyncio.run(change())
    except BackendUnavailable:
        raise SystemExit("the database is unavailable") from None
    if user_id is None:
        raise SystemExit(f"no account with the email {canonical}")
    role = "an operator" if grant else "not an operator"
    print(f"{canonical} (user {user_id}) is now {role}", file=sys.stderr)


_DURATION = re.compile(r"^([1-9][0-9]{0,4})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    """`30m`, `12h`, `7d`: an argparse type."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration like 30m, 12h or 7d: {text!r}")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def use_count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"not a number from 1 to 10000: {text!r}")
    return int(text)


def make_invite(settings: Settings, *, uses: int, lifetime: timedelta) -> None:
    """Print a new invite code for VEIL_REGISTRATION=invite (shown once; only its hash is kept)."""

    async def make() -> str:
        async with _operator_database(settings) as db:
            return await create_invite(db, SystemClock(), uses=uses, lifetime=lifetime)

    try:
        code = asyncio.run(make())
    except BackendUnavailable:
        raise SystemExit("the database is unavailable") from None
    print(code)
    print(f"invite code for {uses} sign-up(s), valid for {lifetime}", file=sys.stderr)


def verify_transparency(settings: Settings) -> None:
    """Rebuild the key-transparency tree from the database and check every stored head: exit 1
    naming the first leaf, node or head that does not hold."""
    from veil.transparency.audit import verify_log
    from veil.transparency.head import keys_for

    public_keys = keys_for(settings).public_keys

    async def check() -> tuple[int, int, str | None]:
        async with (
            _operator_database(settings) as db,
            db.transaction("transparency_verify", isolation="repeatable_read") as conn,
        ):
            # The whole log is read in one go; the statement timeout is for requests.
            await conn.execute("SET LOCAL statement_timeout = 0")
            report = await verify_log(conn, public_keys)
        return report.leaves, report.heads, report.problem

    try:
        leaves, heads, problem = asyncio.run(check())
    except BackendUnavailable:
        raise SystemExit("the database is unavailable") from None
    if problem is not None:
        print(f"transparency log: {problem}", file=sys.stderr)
        raise SystemExit(1)
    print(f"transparency log: {leaves} leaves and {heads} signed heads verified", file=sys.stderr)


def rotate_transparency_key(path: Path) -> None:
    """Make a new active log key in `path` (created if missing); older keys stay, public only."""
    from veil.transparency.head import LogKeys

    draft = path.with_name(f".{path.name}.new")
    LogKeys.generate_file(draft, previous=path)
    draft.replace(path)
    keys = LogKeys.load(path)
    print(f"{path}: new active key {keys.public_key.hex()}", file=sys.stderr)


def print_transparency_keys(path: Path) -> None:
    """Every public key of the file, the active one first, base64: what to publish."""
    import base64

    from veil.transparency.head import LogKeys

    for key in LogKeys.load(path).public_keys:
        print(base64.b64encode(key).decode())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="veil", description=__doc__)
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="dotenv file (if present)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="the whole system for development, with private servers")
    serve_parser = commands.add_parser("serve", help="one service process (uses configured servers)")
    serve_parser.add_argument("service", choices=["all", *SERVICES])
    serve_parser.add_argument("--port", type=int, help="overrides VEIL_PORT")
    commands.add_parser("migrate", help="apply database migrations and exit")
    operator_parser = commands.add_parser("operator", help="grant or revoke the operator role")
    operator_actions = operator_parser.add_subparsers(dest="action", required=True)
    for action, text in (("grant", "make the account an operator"), ("revoke", "take the role away")):
        operator_actions.add_parser(action, help=text).add_argument("email", help="the account's email")
    invites_parser = commands.add_parser("invites", help="invite codes for invite-only registration")
    invite_actions = invites_parser.add_subparsers(dest="action", required=True)
    create_parser = invite_actions.add_parser("create", help="print a new invite code")
    create_parser.add_argument("--uses", type=use_count, default=1, metavar="N", help="sign-ups it allows")
    create_parser.add_argument("--expires", type=duration, default=timedelta(days=7), help="e.g. 12h, 7d")
    transparency_parser = commands.add_parser("transparency", help="the key-transparency log")
    transparency_actions = transparency_parser.add_subparsers(dest="action", required=True)
    transparency_actions.add_parser("verify", help="rebuild the log's tree and check every signed head")
    for action, text in (
        ("rotate-key", "make a new active log key in FILE (keeps the old ones, public only)"),
        ("keys", "print every public key of FILE, the active one first"),
    ):
        transparency_actions.add_parser(action, help=text).add_argument("file", type=Path)
    args = parser.parse_args(argv)

    settings = load_settings(args.env_file)
    configure_logging(settings.log_level)
    if args.command == "run":
        run_development(settings)
    elif args.command == "serve":
        if args.port is not None:
            settings = settings.model_copy(update={"port": args.port})
        serve(settings, args.service)
    elif args.command == "migrate":
        applied = asyncio.run(apply_migrations(_database_url(settings)))
        log.info("migrations_done", applied=applied)
    elif args.command == "operator":
        change_operator_role(settings, args.email, grant=args.action == "grant")
    elif args.command == "invites":
        make_invite(settings, uses=args.uses, lifetime=args.expires)
    elif args.command == "transparency":
        if args.action == "verify":
            verify_transparency(settings)
        elif args.action == "rotate-key":
            rotate_transparency_key(args.file)
        else:
            print_transparency_keys(args.file)


if __name__ == "__main__":
    main()
