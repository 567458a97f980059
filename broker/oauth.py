"""SASL/OAUTHBEARER (RFC 7628, KIP-255, KIP-768) on the Kafka listener: the client sends a
JWT as a bearer token; the broker validates it and takes a claim as the principal.

Validation, as Kafka's OIDC validator (KIP-768) does it: a JWS signed with a key of the
configured JWKS (`server.kafka_oauthbearer_jwks_url`: a file path, file://, http:// or
https:// URL; RS256/384/512, PS256/384/512, ES256/384/512), `exp` in the future and `nbf`
/ `iat` not in it (with `kafka_oauthbearer_clock_skew_s` of slack), the expected audience
and issuer when configured, and the principal claim (`sub` by default) present. With
`kafka_oauthbearer_unsecured`, unsigned tokens (`alg: none`, what librdkafka's
`sasl.oauthbearer.config` and Kafka's default unsecured validator use, for development)
are taken too. The key set is fetched at startup and every `refresh_s`; a token whose key
id is unknown asks for a fetch sooner (at most one a minute).
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.request
from pathlib import Path

from broker.sasl import AuthFailed

log = logging.getLogger(__name__)

_HASHES = {"256": "SHA256", "384": "SHA384", "512": "SHA512"}
_CURVES = {"P-256": "SECP256R1", "P-384": "SECP384R1", "P-521": "SECP521R1"}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _uint(part: str) -> int:
    return int.from_bytes(_b64(part), "big")


def load_jwks(url: str) -> dict:
    """The JWKS document at `url` (a path, file://, http:// or https://)."""
    if url.startswith(("http://", "https://")):
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - configured
            return json.loads(resp.read())
    path = url.removeprefix("file://")
    return json.loads(Path(path).read_text())


def public_keys(jwks: dict) -> dict[str | None, object]:
    """kid -> public key of the signing keys of a JWKS (RSA and EC)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    keys: dict[str | None, object] = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("use", "sig") != "sig":
            continue
        try:
            if jwk["kty"] == "RSA":
                key = rsa.RSAPublicNumbers(_uint(jwk["e"]), _uint(jwk["n"])).public_key()
            elif jwk["kty"] == "EC" and jwk.get("crv") in _CURVES:
                curve = getattr(ec, _CURVES[jwk["crv"]])()
                key = ec.EllipticCurvePublicNumbers(_uint(jwk["x"]), _uint(jwk["y"]),
                                                    curve).public_key()
            else:
                continue
        except (KeyError, ValueError) as e:
            log.warning("JWKS key %s skipped: %s", jwk.get("kid"), e)
            continue
        keys[jwk.get("kid")] = key
    return keys


class OAuthBearer:
    """Validates bearer tokens (see the module doc)."""

    def __init__(self, jwks_url: str = "", unsecured: bool = False,
                 audience: list[str] | tuple = (), issuer: str = "", sub_claim: str = "sub",
                 clock_skew_s: float = 30.0, refresh_s: float = 3600.0, clock=time) -> None:
        self.jwks_url = jwks_url
        self.unsecured = unsecured
        self.audience = set(audience)
        self.issuer = issuer
        self.sub_claim = sub_claim
        self.skew = clock_skew_s
        self.refresh_s = refresh_s
        self.clock = clock
        self.keys: dict[str | None, object] = {}
        self._fetched = 0.0
        self._fetching: asyncio.Task | None = None

    async def load(self) -> None:
        """Fetch the key set (a failure leaves the keys as they were, and is logged)."""
        if not self.jwks_url:
            return
        self._fetched = time.monotonic()
        try:
            doc = await asyncio.get_running_loop().run_in_executor(None, load_jwks,
                                                                   self.jwks_url)
            self.keys = public_keys(doc)
        except (OSError, ValueError) as e:
            log.warning("OAUTHBEARER key set %s could not be read: %s", self.jwks_url, e)

    async def run_refresh(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.refresh_s)
            except TimeoutError:
                await self.load()

    def _refresh_soon(self) -> None:
        if not self.jwks_url or time.monotonic() - self._fetched < 60 or (
                self._fetching is not None and not self._fetching.done()):
            return
        try:
            self._fetching = asyncio.get_running_loop().create_task(self.load())
        except RuntimeError:  # (no loop: a test calling validate directly)
            pass

    def validate(self, token: str) -> str:
        """The principal of a valid token; AuthFailed (with why) otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthFailed("Authentication failed: the bearer token is not a JWS")
        try:
            header = json.loads(_b64(parts[0]))
            claims = json.loads(_b64(parts[1]))
            signature = _b64(parts[2])
        except ValueError:
            raise AuthFailed("Authentication failed: the bearer token does not decode") \
                from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise AuthFailed("Authentication failed: the bearer token does not decode")
        alg = header.get("alg")
        if alg == "none":
            if not self.unsecured:
                raise AuthFailed("Authentication failed: unsigned bearer tokens are not "
                                 "accepted")
            if signature:
                raise AuthFailed("Authentication failed: an unsigned token has a signature")
        else:
            self._verify(alg, header.get("kid"), f"{parts[0]}.{parts[1]}".encode(),
                         signature)
        return self._check_claims(claims)

    def _verify(self, alg, kid, signed: bytes, signature: bytes) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
        if not isinstance(alg, str) or alg[:2] not in ("RS", "PS", "ES") or \
                alg[2:] not in _HASHES:
            raise AuthFailed(f"Authentication failed: unsupported token algorithm {alg!r}")
        key = self.keys.get(kid) if kid is not None or len(self.keys) != 1 else \
            next(iter(self.keys.values()))
        if key is None:
            self._refresh_soon()
            raise AuthFailed(f"Authentication failed: no key {kid!r} in the key set")
        digest = getattr(hashes, _HASHES[alg[2:]])()
        try:
            if alg.startswith("ES"):
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    raise InvalidSignature
                half = len(signature) // 2
                der = utils.encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                                 int.from_bytes(signature[half:], "big"))
                key.verify(der, signed, ec.ECDSA(digest))
            else:
                if not isinstance(key, rsa.RSAPublicKey):
                    raise InvalidSignature
                pad = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(
                    mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
                key.verify(signature, signed, pad, digest)
        except (InvalidSignature, ValueError):
            raise AuthFailed("Authentication failed: the bearer token's signature does not "
                             "verify") from None

    def _check_claims(self, claims: dict) -> str:
        now = self.clock.time()
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)):
            raise AuthFailed("Authentication failed: the bearer token has no exp claim")
        if exp + self.skew <= now:
            raise AuthFailed("Authentication failed: the bearer token has expired")
        for name in ("nbf", "iat"):
            v = claims.get(name)
            if isinstance(v, (int, float)) and v - self.skew > now:
                raise AuthFailed(f"Authentication failed: the bearer token's {name} is in "
                                 "the future")
        if self.audience:
            aud = claims.get("aud")
            given = {aud} if isinstance(aud, str) else set(aud or ())
            if not given & self.audience:
                raise AuthFailed("Authentication failed: the bearer token is not for this "
                                 "audience")
        if self.issuer and claims.get("iss") != self.issuer:
            raise AuthFailed("Authentication failed: the bearer token's issuer is not the "
                             "expected one")
        principal = claims.get(self.sub_claim)
        if not isinstance(principal, str) or not principal:
            raise AuthFailed(f"Authentication failed: the bearer token has no "
                             f"{self.sub_claim} claim")
        return principal


class OAuthExchange:
    """One OAUTHBEARER authentication: the client's initial response carries the token."""

    def __init__(self, validator: OAuthBearer) -> None:
        self.validator = validator
        self.done = False

    def step(self, token: bytes) -> tuple[bytes, str | None]:
        if self.done:
            raise AuthFailed("Authentication failed: unexpected SASL token")
        self.done = True
        try:
            text = bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            raise AuthFailed("Authentication failed: invalid OAUTHBEARER message") from None
        gs2, sep, rest = text.partition("\x01")
        if not sep or not gs2.startswith(("n,", "y,")) or not rest.endswith("\x01\x01"):
            raise AuthFailed("Authentication failed: invalid OAUTHBEARER initial response")
        fields = dict(kv.partition("=")[::2] for kv in rest[:-2].split("\x01") if kv)
        scheme, _, bearer = fields.get("auth", "").partition(" ")
        if scheme.lower() != "bearer" or not bearer:
            raise AuthFailed("Authentication failed: no bearer token in the OAUTHBEARER "
                             "initial response")
        principal = self.validator.validate(bearer.strip())
        authzid = gs2[2:].rstrip(",")
        if authzid.startswith("a=") and authzid[2:] != principal:
            raise AuthFailed("Authentication failed: Client requested an authorization id "
                             "that is different from the token's principal")
        return b"", principal
