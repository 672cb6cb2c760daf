"""J1: every forged or out-of-policy access token is refused; valid ones pass within the skew."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from veil.core.security.tokens import AccessTokens, InvalidToken, SigningKeys

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
USER, SESSION = uuid.uuid4(), uuid.uuid4()


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "jwt-keys.json"
    SigningKeys.generate_file(path)
    return path


@pytest.fixture(scope="module")
def keys(keys_file: Path) -> SigningKeys:
    return SigningKeys.load(keys_file)


@pytest.fixture(scope="module")
def tokens(keys: SigningKeys) -> AccessTokens:
    return AccessTokens(keys, issuer="veil", audience="veil-api", ttl_seconds=900)


def good_claims(**overrides: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "iss": "veil",
        "aud": "veil-api",
        "sub": str(USER),
        "sid": str(SESSION),
        "jti": uuid.uuid4().hex,
        "iat": T,
        "nbf": T,
        "exp": T + 900,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(keys: SigningKeys, claims: dict[str, object], **header: object) -> str:
    base = {"alg": "ES256", "typ": "at+jwt", "kid": keys.active.kid}
    base.update(header)
    return jwt.encode(
        {k: v for k, v in base.items() if v is not None}, claims, keys.active, algorithms=["ES256"]
    )


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_issued_token_verifies_with_the_documented_claims(tokens: AccessTokens, keys: SigningKeys) -> None:
    token = tokens.issue(USER, SESSION, NOW)
    claims = tokens.verify(token, NOW)
    assert (claims.user_id, claims.session_id) == (USER, SESSION)
    assert claims.expires_at - claims.issued_at == 900
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": keys.active.kid}


@pytest.mark.parametrize("offset", [-59, 0, 899 + 59])
def test_tokens_within_the_60_second_skew_are_accepted(tokens: AccessTokens, offset: int) -> None:
    token = tokens.issue(USER, SESSION, NOW)
    tokens.verify(token, datetime.fromtimestamp(T + offset, UTC))


Forgery = Callable[[SigningKeys], str]

FORGERIES: dict[str, Forgery] = {
    "alg_none": lambda k: (
        f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': k.active.kid})}.{b64(good_claims())}."
    ),
    "hs256_with_public_key": lambda k: jwt.encode(
        {"alg": "HS256", "typ": "at+jwt", "kid": k.active.kid},
        good_claims(),
        OctKey.import_key(json.dumps(k.public_jwks()["keys"][0]).encode()),
        algorithms=["HS256"],
    ),
    "unknown_kid": lambda k: sign(k, good_claims(), kid="no-such-key"),
    "kid_path_traversal": lambda k: sign(k, good_claims(), kid="../../etc/passwd"),
    "kid_sql_quote": lambda k: sign(k, good_claims(), kid="' OR '1'='1"),
    "missing_kid": lambda k: sign(k, good_claims(), kid=None),
    "embedded_jwk": lambda k: sign(k, good_claims(), jwk=k.public_jwks()["keys"][0]),
    "jku_header": lambda k: sign(k, good_claims(), jku="https://attacker.example/jwks"),
    "x5u_header": lambda k: sign(k, good_claims(), x5u="https://attacker.example/cert"),
    "bad_signature": lambda k: sign(k, good_claims())[:-6] + "AAAAAA",
    "signed_by_another_key": lambda k: jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": k.active.kid},
        good_claims(),
        ECKey.generate_key("P-256", private=True),
        algorithms=["ES256"],
    ),
    "missing_exp": lambda k: sign(k, good_claims(exp=None)),
    "expired_beyond_skew": lambda k: sign(k, good_claims(iat=T - 1000, nbf=T - 1000, exp=T - 61)),
    "not_yet_valid_beyond_skew": lambda k: sign(k, good_claims(nbf=T + 61)),
    "issued_in_the_future": lambda k: sign(k, good_claims(iat=T + 120, nbf=None)),
    "wrong_issuer": lambda k: sign(k, good_claims(iss="someone-else")),
    "wrong_audience": lambda k: sign(k, good_claims(aud="another-api")),
    "wrong_typ": lambda k: sign(k, good_claims(), typ="JWT"),
    "refresh_typ": lambda k: sign(k, good_claims(), typ="refresh+jwt"),
    "missing_sid": lambda k: sign(k, good_claims(sid=None)),
    "sub_not_a_uuid": lambda k: sign(k, good_claims(sub="admin")),
    "garbage": lambda k: "not.a.token",
    "opaque_refresh_token": lambda k: "kq3n0Wm1VfH3Zr2fJp1kQnq9kq3n0Wm1VfH3Zr2fJp1",
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_and_out_of_policy_tokens_are_refused(
    tokens: AccessTokens, keys: SigningKeys, forgery: str
) -> None:
    token = FORGERIES[forgery](keys)
    with pytest.raises(InvalidToken):
        tokens.verify(token, NOW)


def test_tokens_signed_with_the_previous_key_verify_after_rotation(keys_file: Path, tmp_path: Path) -> None:
    before = SigningKeys.load(keys_file)
    old_token = AccessTokens(before, issuer="veil", audience="veil-api", ttl_seconds=900).issue(
        USER, SESSION, NOW
    )

    rotated_file = tmp_path / "rotated.json"
    SigningKeys.generate_file(rotated_file, previous=keys_file)
    after = SigningKeys.load(rotated_file)
    assert after.active.kid != before.active.kid
    rotated = AccessTokens(after, issuer="veil", audience="veil-api", ttl_seconds=900)
    assert rotated.verify(old_token, NOW).session_id == SESSION
    new_token = rotated.issue(USER, SESSION, NOW)
    assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))["kid"] == after.active.kid
    assert {k["kid"] for k in after.public_jwks()["keys"]} == {before.active.kid, after.active.kid}


def test_a_remembered_token_still_expires_and_a_changed_one_is_verified_again(keys: SigningKeys) -> None:
    tokens = AccessTokens(keys, issuer="veil", audience="veil-api", ttl_seconds=900)
    token = tokens.issue(USER, SESSION, NOW)
    assert tokens.verify(token, NOW).session_id == SESSION
    assert tokens.verify(token, datetime.fromtimestamp(T + 900 + 60, UTC)).session_id == SESSION
    with pytest.raises(InvalidToken):  # remembered, but past its expiry and the skew
        tokens.verify(token, datetime.fromtimestamp(T + 900 + 61, UTC))

    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(InvalidToken):  # a token one character off is not the remembered one
        tokens.verify(f"{header}.{payload}.{flipped}", NOW)


def test_the_memory_of_verified_tokens_is_bounded(keys: SigningKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = AccessTokens(keys, issuer="veil", audience="veil-api", ttl_seconds=900, cache_size=2)
    first, second, third = (tokens.issue(USER, SESSION, NOW) for _ in range(3))
    for token in (first, second, third):
        tokens.verify(token, NOW)
    verified: list[str] = []
    original = tokens._verify_uncached

    def counting(token: str, now: datetime) -> object:
        verified.append(token)
        return original(token, now)

    monkeypatch.setattr(tokens, "_verify_uncached", counting)
    tokens.verify(third, NOW)
    tokens.verify(second, NOW)
    assert verified == []  # the two most recent are answered from memory
    tokens.verify(first, NOW)
    assert verified == [first]  # the oldest was forgotten and is checked again
