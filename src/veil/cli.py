"""The `veil` command: `veil run` (the whole system for development), `veil serve SERVICE`
(one service process, production shape) and `veil migrate`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from veil import server
from veil.core.config import Settings, load_settings
from veil.core.logging import configure_logging, get_logger
from veil.core.migrations import apply_migrations
from veil.gateway.app import SERVICES, create_service_app

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="veil", description=__doc__)
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="dotenv file (if present)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="the whole system for development, with private servers")
    serve_parser = commands.add_parser("serve", help="one service process (uses configured servers)")
    serve_parser.add_argument("service", choices=["all", *SERVICES])
    serve_parser.add_argument("--port", type=int, help="overrides VEIL_PORT")
    commands.add_parser("migrate", help="apply database migrations and exit")
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


if __name__ == "__main__":
    main()
