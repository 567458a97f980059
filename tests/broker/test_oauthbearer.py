"""SASL/OAUTHBEARER token validation (broker/oauth.py): signed JWTs against a JWKS (RSA,
PSS and ECDSA), the claims Kafka's OIDC validator checks, unsigned tokens only when
allowed, and the RFC 7628 initial response."""
from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from broker.oauth import OAuthBearer, OAuthExchange, public_keys
from broker.sasl import AuthFailed, SaslUsers


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks() -> dict:
    rn = RSA_KEY.public_key().public_numbers()
    en = EC_KEY.public_key().public_numbers()
    return {"keys": [{"kty": "RSA", "kid": "r1", "use": "sig", "n": uint(rn.n), "e": uint(rn.e)},
                     {"kty": "EC", "kid": "e1", "crv": "P-256", "x": uint(en.x),
                      "y": uint(en.y)},
                     {"kty": "RSA", "kid": "enc", "use": "enc", "n": uint(rn.n),
                      "e": uint(rn.e)}]}


def token(claims: dict, alg: str = "RS256", kid: str | None = "r1") -> str:
    header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    signed = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if alg == "none":
        return signed + "."
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if alg.startswith("RS"):
        sig = RSA_KEY.sign(signed.encode(), padding.PKCS1v15(), digest)
    elif alg.startswith("PS"):
        sig = RSA_KEY.sign(signed.encode(), padding.PSS(mgf=padding.MGF1(digest),
                                                        salt_length=padding.PSS.DIGEST_LENGTH),
                           digest)
    else:
        r, s = utils.decode_dss_signature(EC_KEY.sign(signed.encode(), ec.ECDSA(digest)))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signed}.{b64(sig)}"


def claims(**kw) -> dict:
    now = int(time.time())
    return {"sub": "alice", "exp": now + 300, "iat": now, "aud": "kafka",
            "iss": "https://idp.example", **kw}


@pytest.fixture
def validator(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks()))
    v = OAuthBearer(f"file://{path}", audience=["kafka"], issuer="https://idp.example")
    v.keys = public_keys(jwks())
    return v


@pytest.mark.parametrize("alg,kid", [("RS256", "r1"), ("RS512", "r1"), ("PS256", "r1"),
                                     ("ES256", "e1")])
def test_signed_tokens_verify(validator, alg, kid):
    assert validator.validate(token(claims(), alg, kid)) == "alice"


@pytest.mark.parametrize("bad,why", [
    (lambda: token(claims(exp=int(time.time()) - 120)), "expired"),
    (lambda: token(claims(nbf=int(time.time()) + 600)), "nbf"),
    (lambda: token(claims(aud="other")), "audience"),
    (lambda: token(claims(iss="https://evil.example")), "issuer"),
    (lambda: token({k: v for k, v in claims().items() if k != "sub"}), "sub claim"),
    (lambda: token({k: v for k, v in claims().items() if k != "exp"}), "exp claim"),
    (lambda: token(claims(), kid="nope"), "no key"),
    (lambda: token(claims(), kid="enc"), "no key"),
    (lambda: token(claims(), "ES256", "r1"), "does not verify"),
    (lambda: token(claims(sub="mallory"))[:-8] + "AAAAAAAA", "does not verify"),
    (lambda: token(claims(), "none", None), "unsigned"),
    (lambda: token(claims(), "HS256"), "unsupported"),
    (lambda: "not-a-jwt", "not a JWS"),
])
def test_bad_tokens_are_refused(validator, bad, why):
    with pytest.raises(AuthFailed, match=why):
        validator.validate(bad())


def test_unsigned_tokens_only_when_allowed():
    v = OAuthBearer(unsecured=True)
    assert v.validate(token(claims(sub="dev"), "none", None)) == "dev"
    with pytest.raises(AuthFailed, match="expired"):
        v.validate(token(claims(exp=1), "none", None))


def test_the_initial_response(validator):
    users = SaslUsers({}, oauth=validator)
    assert users and users.mechanisms == ["OAUTHBEARER"]
    good = token(claims())
    ex = users.start("OAUTHBEARER")
    assert ex.step(f"n,,\x01auth=Bearer {good}\x01\x01".encode()) == (b"", "alice")
    ex = users.start("OAUTHBEARER")
    assert ex.step(f"n,a=alice,\x01host=h\x01auth=Bearer {good}\x01\x01".encode())[1] == "alice"
    for msg in (f"n,a=bob,\x01auth=Bearer {good}\x01\x01", "n,,\x01auth=Basic x\x01\x01",
                f"n,,auth=Bearer {good}", "\xff"):
        with pytest.raises(AuthFailed):
            OAuthExchange(validator).step(msg.encode())
    ex = OAuthExchange(validator)
    ex.step(f"n,,\x01auth=Bearer {good}\x01\x01".encode())
    with pytest.raises(AuthFailed):
        ex.step(b"\x01")
    # with users too: OAUTHBEARER is offered along with the others
    both = SaslUsers({"u": "p"}, oauth=validator)
    assert both.mechanisms == ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER"]
    assert SaslUsers({"u": "p"}).mechanisms == ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
