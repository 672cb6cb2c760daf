"""The token pair as the key store keeps it, and whether a refused refresh means expired or revoked."""

from __future__ import annotations

from veil.client.sdk.models import VeilError
from veil.client.sdk.tokens import SessionTokens, tokens_from_state, tokens_state

NOW = 1_800_000_000.0
PAIR = {"access_token": "a", "expires_in": 900, "refresh_token": "r", "refresh_expires_in": 86_400}
REFUSAL = VeilError(401, "Unauthorized", "The refresh token is invalid, expired or revoked.")


def test_a_pair_survives_the_key_store_and_is_renewed_ahead_of_its_expiry() -> None:
    tokens = tokens_from_state(tokens_state(SessionTokens.issued(PAIR, NOW)))
    assert tokens is not None and (tokens.access_token, tokens.refresh_token) == ("a", "r")
    assert not tokens.access_due(NOW + 869)
    assert tokens.access_due(NOW + 870)  # 30 s before the server would refuse it
    assert tokens_from_state(tokens_state(None)) is None
    # A key store from before the access token was kept: the first request refreshes.
    old = tokens_from_state({"refresh_token": "r"})
    assert old is not None and old.access_due(NOW) and old.refresh_expires_at is None


def test_a_refusal_is_an_expiry_only_at_the_end_of_the_session() -> None:
    tokens = SessionTokens.issued(PAIR, NOW)
    revoked = tokens.ended(REFUSAL, NOW + 3600)
    assert (revoked.status, revoked.expired) == (401, False)
    assert tokens.ended(REFUSAL, NOW + 86_400).expired
    unknown_end = tokens_from_state({"refresh_token": "r"})  # kept before the end was
    assert unknown_end is not None and not unknown_end.ended(REFUSAL, NOW).expired
