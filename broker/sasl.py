"""SASL mechanisms of the Kafka listener: PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802,
RFC 7677), as Kafka serves them, for the users of `server.kafka_sasl_users`; and
OAUTHBEARER (broker/oauth.py) when a token validator is configured.

A connection runs one `Exchange` after its SaslHandshake: each token the client sends
(a SaslAuthenticate request, or a raw frame after a SaslHandshake v0) gets a reply token,
until the exchange names the authenticated user or fails. SCRAM credentials (salted
password, stored and server keys) are derived once, at startup, with a random salt and
4096 iterations (Kafka's minimum); the passwords themselves stay in the config only for
PLAIN."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from typing import Protocol

from s2core.metadata import list_all
from s2core.metadata.base import VersionMismatch

ALL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER")
ITERATIONS = 4096
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}  # hashlib names
_CLIENT_FIRST = re.compile(r"(?P<gs2>[ny],(?:a=(?P<authzid>[^,]*))?,)"
                           r"(?P<bare>n=(?P<name>[^,]*),r=(?P<nonce>[^,]+)(?:,.*)?)")
_CLIENT_FINAL = re.compile(r"(?P<without>c=(?P<cbind>[^,]*),r=(?P<nonce>[^,]+)(?:,.*?)?),"
                           r"p=(?P<proof>[^,]+)")


class AuthFailed(Exception):
    """The client is not authenticated; the message is what Kafka says."""


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def scram_credential(password: str, hash_name: str, salt: bytes | None = None,
                     iterations: int = ITERATIONS) -> ScramCredential:
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    return salted_credential(salted, salt, iterations, hash_name)


def salted_credential(salted: bytes, salt: bytes, iterations: int,
                      hash_name: str) -> ScramCredential:
    """The credential a server keeps, from a salted password (what AlterUserScramCredentials
    sends: the password itself never reaches the broker)."""
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    return ScramCredential(salt, iterations, hashlib.new(hash_name, client_key).digest(),
                           hmac.new(salted, b"Server Key", hash_name).digest())


# Kafka's ScramMechanism codes in the user-credential admin APIs, and the iterations it takes
MECHANISM_CODES = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 16384
_STORED = "kafka/scram/"  # metadata: kafka/scram/<mechanism>/<user> -> a ScramCredential


class SaslUsers:
    """The listener's users and enabled mechanisms (empty: no SASL on the listener)."""

    def __init__(self, users: dict[str, str], mechanisms=ALL_MECHANISMS, oauth=None) -> None:
        self.passwords = dict(users)
        self.oauth = oauth  # an oauth.OAuthBearer: OAUTHBEARER is offered
        self.mechanisms = [m for m in ALL_MECHANISMS if m in mechanisms and (
            oauth is not None if m == "OAUTHBEARER" else bool(users))]
        self.scram = {m: {u: scram_credential(p, h) for u, p in users.items()}
                      for m, h in HASHES.items() if m in self.mechanisms}
        # credentials set with AlterUserScramCredentials (kept in metadata), which take
        # precedence over the configuration's for the same user and mechanism
        self.stored: dict[str, dict[str, ScramCredential]] = {m: {} for m in HASHES}

    def credential(self, mechanism: str, user: str) -> ScramCredential | None:
        return self.stored.get(mechanism, {}).get(user) or \
            self.scram.get(mechanism, {}).get(user)

    def described(self) -> dict[str, dict[str, int]]:
        """user -> {mechanism: iterations}, configured and stored."""
        out: dict[str, dict[str, int]] = {}
        for source in (self.scram, self.stored):
            for mech, creds in source.items():
                for user, cred in creds.items():
                    out.setdefault(user, {})[mech] = cred.iterations
        return out

    async def load(self, metadata) -> None:
        """The stored credentials, from metadata (at startup)."""
        stored: dict[str, dict[str, ScramCredential]] = {m: {} for m in self.stored}
        for key, v in await list_all(metadata, _STORED):
            mech, _, user = key[len(_STORED):].partition("/")
            if mech in stored:
                d = json.loads(v.value)
                stored[mech][user] = ScramCredential(
                    base64.b64decode(d["salt"]), d["iterations"],
                    base64.b64decode(d["stored_key"]), base64.b64decode(d["server_key"]))
        self.stored = stored

    async def store(self, metadata, mechanism: str, user: str,
                    cred: ScramCredential) -> None:
        key = f"{_STORED}{mechanism}/{user}"
        value = json.dumps({"salt": base64.b64encode(cred.salt).decode(),
                            "iterations": cred.iterations,
                            "stored_key": base64.b64encode(cred.stored_key).decode(),
                            "server_key": base64.b64encode(cred.server_key).decode()}).encode()
        while True:
            row = await metadata.get(key)
            try:
                if row is None:
                    await metadata.create(key, value)
                else:
                    await metadata.put(key, value, row.version)
                break
            except VersionMismatch:
                continue
        self.stored[mechanism][user] = cred

    async def remove(self, metadata, mechanism: str, user: str) -> None:
        """Drop a stored credential."""
        await metadata.delete(f"{_STORED}{mechanism}/{user}")
        self.stored[mechanism].pop(user, None)

    def __bool__(self) -> bool:
        return bool(self.mechanisms)

    def start(self, mechanism: str) -> Exchange:
        if mechanism == "PLAIN":
            return PlainExchange(self)
        if mechanism == "OAUTHBEARER":
            from broker.oauth import OAuthExchange
            return OAuthExchange(self.oauth)
        return ScramExchange(self, mechanism)


class Exchange(Protocol):
    """One authentication: `step(token)` -> (reply token, user once authenticated);
    raises AuthFailed."""

    def step(self, token: bytes) -> tuple[bytes, str | None]: ...


class PlainExchange:
    def __init__(self, users: SaslUsers) -> None:
        self.users = users

    def step(self, token: bytes) -> tuple[bytes, str | None]:
        parts = bytes(token).split(b"\0")
        if len(parts) != 3:
            raise AuthFailed("Authentication failed: invalid SASL/PLAIN request")
        authzid, user, password = (x.decode("utf-8", "replace") for x in parts)
        expected = self.users.passwords.get(user)
        if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
            raise AuthFailed("Authentication failed: Invalid username or password")
        if authzid and authzid != user:
            raise AuthFailed("Authentication failed: Client requested an authorization id "
                             "that is different from username")
        return b"", user


class ScramExchange:
    def __init__(self, users: SaslUsers, mechanism: str,
                 server_nonce: str | None = None) -> None:
        self.users = users
        self.server_nonce = server_nonce  # (tests: RFC 7677's example)
        self.mechanism = mechanism
        self.hash = HASHES[mechanism]
        self.state = "first"
        self.user = ""
        self.cred: ScramCredential | None = None
        self.nonce = ""
        self.client_nonce = ""
        self.gs2 = ""
        self.client_first_bare = ""
        self.server_first = ""

    def _bad(self) -> AuthFailed:
        return AuthFailed("Authentication failed during authentication due to invalid "
                          f"credentials with SASL mechanism {self.mechanism}")

    def step(self, token: bytes) -> tuple[bytes, str | None]:
        try:
            text = bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            raise AuthFailed(f"Authentication failed: invalid {self.mechanism} message") \
                from None
        if self.state == "first":
            return self._first(text), None
        if self.state == "final":
            return self._final(text)
        raise AuthFailed("Authentication failed: unexpected SASL token")

    def _first(self, text: str) -> bytes:
        m = _CLIENT_FIRST.fullmatch(text)
        if m is None:
            raise AuthFailed(f"Authentication failed: invalid {self.mechanism} client-first "
                             "message")
        name = m["name"].replace("=2C", ",").replace("=3D", "=")
        if m["authzid"] and m["authzid"] != name:
            raise AuthFailed("Authentication failed: Client requested an authorization id "
                             "that is different from username")
        self.cred = self.users.credential(self.mechanism, name)
        if self.cred is None:
            raise AuthFailed("Authentication failed: Invalid user credentials")
        self.user = name
        self.gs2 = m["gs2"]
        self.client_first_bare = m["bare"]
        self.client_nonce = m["nonce"]
        self.nonce = m["nonce"] + (self.server_nonce or base64.b64encode(os.urandom(18)).decode())
        self.server_first = (f"r={self.nonce},s={base64.b64encode(self.cred.salt).decode()},"
                             f"i={self.cred.iterations}")
        self.state = "final"
        return self.server_first.encode()

    def _final(self, text: str) -> tuple[bytes, str]:
        self.state = "done"
        m = _CLIENT_FINAL.fullmatch(text)
        # librdkafka before 2.6.1 (Debian's kcat among them) sends its own nonce twice:
        # c-nonce + (c-nonce + s-nonce). Kafka 3.8.1-3.9 took any nonce ending with the
        # server's; exactly that form is taken here, the echo of ours is still required
        if m is None or m["nonce"] not in (self.nonce, self.client_nonce + self.nonce) or \
                m["cbind"] != base64.b64encode(self.gs2.encode()).decode():
            raise self._bad()
        auth = f"{self.client_first_bare},{self.server_first},{m['without']}".encode()
        try:
            proof = base64.b64decode(m["proof"], validate=True)
        except ValueError:
            raise self._bad() from None
        signature = hmac.new(self.cred.stored_key, auth, self.hash).digest()
        if len(proof) != len(signature):
            raise self._bad()
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(hashlib.new(self.hash, client_key).digest(),
                                   self.cred.stored_key):
            raise self._bad()
        server_signature = hmac.new(self.cred.server_key, auth, self.hash).digest()
        return b"v=" + base64.b64encode(server_signature), self.user
