"""The configuration as every subcommand gets it: read and validated once, with the files it names
(token and log keys, TLS certificate) loaded as the server loads them at start, so that a command
and the server refuse the same environment with the same one-line problems."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

from veil.commands.output import fail
from veil.core.config import ConfigurationError, Settings, load_settings
from veil.core.logging import configure_logging
from veil.core.security.tokens import SigningKeys
from veil.transparency.head import LogKeys


def file_problems(settings: Settings) -> list[str]:
    """What the server would refuse at start in the files the configuration names."""
    problems: list[str] = []
    if settings.jwt_keys_file is not None:
        try:
            SigningKeys.load(settings.jwt_keys_file)
        except OSError as exc:
            problems.append(f"VEIL_JWT_KEYS_FILE: cannot read {settings.jwt_keys_file} ({exc.strerror})")
        except (ValueError, KeyError, TypeError):
            problems.append(f"VEIL_JWT_KEYS_FILE: {settings.jwt_keys_file} is not a token key file")
    if settings.transparency_keys_file is not None:
        try:
            LogKeys.load(settings.transparency_keys_file)
        except ValueError as exc:
            problems.append(f"VEIL_TRANSPARENCY_KEYS_FILE: {exc}")
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is not None and key is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError):
            problems.append(f"VEIL_TLS_CERT_FILE: {cert} with {key} is not a readable certificate and key")
    return problems


def check(env_file: Path) -> Settings:
    """The validated configuration, or every problem with it (`Failed`)."""
    try:
        settings = load_settings(env_file)
    except ConfigurationError as exc:
        fail(*exc.problems)
    problems = file_problems(settings)
    if problems:
        fail(*problems)
    return settings


def configuration(args: argparse.Namespace) -> Settings:
    """The configuration for a subcommand, with logging set up as it asks."""
    settings = check(args.env_file)
    configure_logging(settings.log_level, log_format=settings.log_format)
    return settings
