"""Access tokens: short-lived ES256 JWTs, verified strictly (RFC 8725).

Signing keys are a set: the *active* key signs, every key in the set verifies, so a rotation adds
a key, makes it active, and drops the old one once its last tokens have expired (15 minutes).
Verification accepts exactly one algorithm and one `typ`, looks the `kid` up by exact match in
our own set, ignores nothing: `alg=none`, HS256 with the public key as secret, embedded
`jwk`/`jku`/`x5u`/`x5c`, unknown or malformed `kid`, a bad signature, a wrong `iss`/`aud`/`typ` and
expiry beyond the 60 s skew are all refused with `InvalidToken`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from joserfc.jwt import JWTClaimsRegistry

ALGORITHM = "ES256"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068; a refresh token is opaque and can never pass as one
# Verified tokens remembered per process. A client presents the same token for up to 15 minutes, so
# a few thousand entries cover every active device of a busy process; beyond that the least recently
# used is forgotten and simply verified again.
VERIFIED_CACHE_SIZE = 4096
_FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit"})


class InvalidToken(Exception):
    """The token is not a valid access token of this server. Never says why to the client."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    token_id: str
    issued_at: int
    expires_at: int


class SigningKeys:
    """The key set from `VEIL_JWT_KEYS_FILE`: `{"active": kid, "keys": [private JWK, ...]}`."""

    def __init__(self, keys: list[ECKey], active_kid: str) -> None:
        self._keys = {str(key.kid): key for key in keys}
        if active_kid not in self._keys:
            raise ValueError("the active signing key is not in the key set")
        self.active = self._keys[active_kid]
        self.key_set = KeySet(list(self._keys.values()))

    @classmethod
    def load(cls, path: Path) -> SigningKeys:
        document = json.loads(path.read_text())
        keys = [ECKey.import_key(jwk) for jwk in document["keys"]]
        for key in keys:
            if key.as_dict(private=True).get("crv") != "P-256" or not key.is_private:
                raise ValueError("signing keys must be private P-256 keys")
        return cls(keys, document["active"])

    @staticmethod
    def generate_file(path: Path, previous: Path | None = None) -> None:
        """Write a key set whose active key is new; keys of `previous` stay for verification."""
        keys = []
        if previous is not None and previous.exists():
            keys = json.loads(previous.read_text())["keys"]
        key = ECKey.generate_key("P-256", private=True)
        kid = key.thumbprint()
        keys.append({**key.as_dict(private=True), "kid": kid})
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(json.dumps({"active": kid, "keys": keys}))

    def public_jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {**key.as_dict(private=False), "kid": kid, "use": "sig", "alg": ALGORITHM}
                for kid, key in self._keys.items()
            ]
        }

    def has(self, kid: object) -> bool:
        return isinstance(kid, str) and kid in self._keys


class _VerifiedTokens:
    """Claims of tokens whose signature and claims this process already checked, so that a device
    sending many requests pays for one ES256 verification per token instead of one per request.

    Keyed by SHA-256 of the token: the map holds no credential. What can change for an already
    verified token is only time, so a hit is re-checked against its expiry; revocation is not the
    token's business but the session check's, which runs on every request regardless.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._claims: OrderedDict[bytes, AccessClaims] = OrderedDict()

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    def get(self, key: bytes) -> AccessClaims | None:
        claims = self._claims.get(key)
        if claims is not None:
            self._claims.move_to_end(key)
        return claims

    def put(self, key: bytes, claims: AccessClaims) -> None:
        self._claims[key] = claims
        if len(self._claims) > self._size:
            self._claims.popitem(last=False)

    def drop(self, key: bytes) -> None:
        self._claims.pop(key, None)


class AccessTokens:
    def __init__(
        self,
        keys: SigningKeys,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        leeway_seconds: int = 60,
        cache_size: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self.ttl_seconds = ttl_seconds
        self._leeway = leeway_seconds
        self._verified = _VerifiedTokens(cache_size)

    def issue(self, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime) -> str:
        issued_at = int(now.timestamp())
        header = {"alg": ALGORITHM, "typ": ACCESS_TOKEN_TYPE, "kid": str(self._keys.active.kid)}
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "sid": str(session_id),
            "jti": uuid.uuid4().hex,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self.ttl_seconds,
        }
        return jwt.encode(header, claims, self._keys.active, algorithms=[ALGORITHM])

    def verify(self, token: str, now: datetime) -> AccessClaims:
        key = self._verified.key(token)
        cached = self._verified.get(key)
        if cached is not None:
            if int(now.timestamp()) > cached.expires_at + self._leeway:
                self._verified.drop(key)
                raise InvalidToken
            return cached
        claims = self._verify_uncached(token, now)
        self._verified.put(key, claims)
        return claims

    def _verify_uncached(self, token: str, now: datetime) -> AccessClaims:
        try:
            decoded = jwt.decode(token, self._select_key, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidToken from exc
        header = decoded.header
        if header.get("typ") != ACCESS_TOKEN_TYPE or _FORBIDDEN_HEADERS & set(header):
            raise InvalidToken
        registry = JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            sub={"essential": True},
            sid={"essential": True},
            jti={"essential": True},
            iat={"essential": True},
            exp={"essential": True},
        )
        claims = decoded.claims
        try:
            registry.validate(claims)
            if int(claims["iat"]) > int(now.timestamp()) + self._leeway:
                raise InvalidToken
            return AccessClaims(
                user_id=uuid.UUID(str(claims["sub"])),
                session_id=uuid.UUID(str(claims["sid"])),
                token_id=str(claims["jti"]),
                issued_at=int(claims["iat"]),
                expires_at=int(claims["exp"]),
            )
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidToken from exc

    def _select_key(self, guest: Any) -> ECKey:
        kid = guest.headers().get("kid")
        if not self._keys.has(kid):
            raise InvalidToken
        return self._keys.key_set.get_by_kid(kid)  # type: ignore[return-value]
