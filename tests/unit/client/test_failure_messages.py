"""Every refusal of the cryptographic core reads as a sentence, never an exception name
(sdk/failure_messages.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import veil.client.protocol
import veil.client.protocol.errors as errors
from veil.client.protocol.errors import CryptoError, RetiredEpochError, UnknownSenderKeyError
from veil.client.sdk.failure_messages import REASON_OF, failure_sentence, known_reasons, reason_of


def crypto_errors() -> list[type[CryptoError]]:
    """Every CryptoError class Veil defines (itself included), in whichever protocol module."""
    for module in pkgutil.iter_modules(veil.client.protocol.__path__):
        importlib.import_module(f"veil.client.protocol.{module.name}")
    found: list[type[CryptoError]] = [CryptoError]
    for cls in found:
        found.extend(sub for sub in cls.__subclasses__() if sub not in found)
    found = [cls for cls in found if cls.__module__.startswith("veil.")]  # not this file's own
    declared = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, CryptoError)]
    assert set(declared) <= set(found)
    return found


def test_every_crypto_error_has_its_own_sentence() -> None:
    missing = [cls.__name__ for cls in crypto_errors() if cls not in REASON_OF]
    assert not missing, f"add a reason and a sentence to sdk/failure_messages.py for {missing}"
    for cls in crypto_errors():
        reason = reason_of(cls("internal detail"))
        assert reason in known_reasons()
        sentence = failure_sentence(reason, "Bob")
        assert "Error" not in sentence and "internal detail" not in sentence
        assert not sentence.endswith(".")  # it goes inside brackets or before more text


def test_the_sentence_names_the_sender_and_the_nearest_class_decides() -> None:
    assert failure_sentence(reason_of(UnknownSenderKeyError("x")), "Bob") == (
        "cannot read this message yet: waiting for Bob's new key"
    )
    assert "retired" in failure_sentence(reason_of(RetiredEpochError("x")))

    class FutureError(UnknownSenderKeyError):
        pass

    assert reason_of(FutureError("x")) == reason_of(UnknownSenderKeyError("x"))
    assert failure_sentence("a reason from a newer client") == failure_sentence("unreadable")
