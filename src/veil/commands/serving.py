"""`veil run` (the whole system for development, with private servers) and `veil serve SERVICE`
(one service process, production shape, on the configured servers)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from veil.commands.database import database_url
from veil.commands.environment import configuration
from veil.commands.output import Subcommands, fail
from veil.core.migrations import apply_migrations

# The web stack and every service are imported by the two commands that serve, not by the others.


def run_development(args: argparse.Namespace) -> int:
    """Start the private PostgreSQL, S3 and mail sink (unless configured elsewhere), migrate, serve
    HTTPS."""
    from veil import workers
    from veil.devstack.stack import start_dev_stack
    from veil.devstack.tls import ensure_dev_certificates

    stack = asyncio.run(start_dev_stack(configuration(args)))
    try:
        settings = stack.settings
        asyncio.run(apply_migrations(database_url(settings)))
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
            f"  workers:        {settings.worker_count} (VEIL_WORKERS)\n"
            f"  try:            curl --cacert {ca_note} https://localhost:{settings.port}/readyz\n"
            "  stop:           Ctrl-C\n",
            file=sys.stderr,
            flush=True,
        )
        return workers.serve(settings, "all", cert_file=cert_file, key_file=key_file)
    finally:
        stack.stop()


def serve(args: argparse.Namespace) -> int:
    from veil import workers
    from veil.gateway.app import SERVICES

    if args.service not in ("all", *SERVICES):
        args.usage.error(f"argument service: choose from all, {', '.join(SERVICES)}")
    settings = configuration(args)
    # `veil run` starts private servers for what is not configured; a service process does not.
    unset = [
        name
        for name, value in (
            ("DATABASE_URL", settings.database_url),
            ("S3_ENDPOINT", settings.s3_endpoint),
            ("SMTP_HOST", settings.smtp_host),
            ("VEIL_JWT_KEYS_FILE", settings.jwt_keys_file),
        )
        if not value
    ]
    if unset:
        fail(*(f"{name} is required by `veil serve` (or use `veil run`)" for name in unset))
    if args.port is not None:
        settings = settings.model_copy(update={"port": args.port})
    return workers.serve(
        settings, args.service, cert_file=settings.tls_cert_file, key_file=settings.tls_key_file
    )


def add_parser(commands: Subcommands) -> None:
    commands.add_parser("run", help="the whole system for development, with private servers").set_defaults(
        handler=run_development
    )
    serve_parser = commands.add_parser("serve", help="one service process (uses configured servers)")
    serve_parser.add_argument("service", help="all, or one service: auth, keys, messaging, ...")
    serve_parser.add_argument("--port", type=int, help="overrides VEIL_PORT")
    serve_parser.set_defaults(handler=serve, usage=serve_parser)
