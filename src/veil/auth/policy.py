"""What an acceptable email and password are.

Passwords: 8 to 128 characters of any kind (NIST SP 800-63B: length, not composition rules) and
not among the 10,000 most common passwords (zxcvbn's frequency list), compared case-insensitively.
Emails: syntactically valid, normalised (IDNA domain, then lower-cased) so that one mailbox is one
account.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from veil.core.problems import FieldError, validation_failed

COMMON_PASSWORDS_CHECKED = 10_000


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"][:COMMON_PASSWORDS_CHECKED])


def is_common_password(password: str) -> bool:
    return password.lower() in _common_passwords()


def check_new_password(password: str) -> None:
    if not 8 <= len(password) <= 128:
        raise validation_failed([FieldError(("password",), "Passwords have 8 to 128 characters.")])
    if is_common_password(password):
        raise validation_failed([FieldError(("password",), "This password is too common; choose another.")])


def normalize_email(email: str) -> str:
    """The canonical form of an address, or a 422 problem."""
    try:
        result = validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        raise validation_failed([FieldError(("email",), "Not a valid email address.")]) from None
    return result.normalized.lower()
