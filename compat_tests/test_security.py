"""TLS on the Kafka listener (security.protocol=SSL, with and without client certificates)
and on the S2 HTTP API (https), SASL users (SASL_PLAINTEXT and SASL_SSL) and OAUTHBEARER
tokens, with confluent-kafka, kafka-python, Debian's kcat and httpx: a plaintext client gets
no answer from a TLS listener, a client without the certificate a mutual-TLS listener asks
for is refused, and so is a client with a wrong password, a bad token or none."""
from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import time

import httpx
import pytest
from brokerproc import start_broker
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    files = {"ca": _cert("test CA", ca_key, "test CA", ca_key, ca=True)}
    keys = {}
    for who in ("server", "client"):
        keys[who] = ec.generate_private_key(ec.SECP256R1())
        files[who] = _cert(f"test {who}", keys[who], "test CA", ca_key, server=who == "server")
    out = {}
    for name, cert in files.items():
        out[name] = str(d / f"{name}.pem")
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for who, key in keys.items():
        out[f"{who}_key"] = str(d / f"{who}.key")
        (d / f"{who}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return out


def tls_broker(tmp_path, pki, *, client_ca: bool = False):
    extra = ["--set", f"server.kafka_tls_cert_file={pki['server']}",
             "--set", f"server.kafka_tls_key_file={pki['server_key']}",
             "--set", f"server.http_tls_cert_file={pki['server']}",
             "--set", f"server.http_tls_key_file={pki['server_key']}"]
    if client_ca:
        extra += ["--set", f"server.kafka_tls_client_ca_file={pki['ca']}"]
    return start_broker(str(tmp_path / "data"), extra=extra)


def test_kafka_clients_and_https_over_tls(tmp_path, pki):
    b = tls_broker(tmp_path, pki)
    try:
        ssl_conf = {"bootstrap.servers": b.bootstrap, "security.protocol": "SSL",
                    "ssl.ca.location": pki["ca"]}
        p = Producer(ssl_conf)
        for i in range(3):
            p.produce("secure", value=b"librdkafka-%d" % i)
        assert p.flush(20) == 0
        kp = KafkaProducer(bootstrap_servers=b.bootstrap, security_protocol="SSL",
                           ssl_cafile=pki["ca"])
        kp.send("secure", b"kafka-python").get(20)
        kp.close()

        c = Consumer({**ssl_conf, "group.id": "secure-reader", "enable.auto.commit": False})
        c.assign([TopicPartition("secure", 0, 0)])
        got = []
        while len(got) < 4:
            m = c.poll(10)
            assert m is not None and m.error() is None
            got.append(m.value())
        c.close()
        assert got == [b"librdkafka-0", b"librdkafka-1", b"librdkafka-2", b"kafka-python"]
        kc = KafkaConsumer(bootstrap_servers=b.bootstrap, security_protocol="SSL",
                           ssl_cafile=pki["ca"], consumer_timeout_ms=10_000)
        kc.assign([KTP("secure", 0)])
        kc.seek(KTP("secure", 0), 3)
        assert next(iter(kc)).value == b"kafka-python"
        kc.close()

        if shutil.which("kcat"):  # Debian's kcat, built on librdkafka 2.0
            out = subprocess.run(
                ["kcat", "-b", b.bootstrap, "-X", "security.protocol=ssl", "-X",
                 f"ssl.ca.location={pki['ca']}", "-C", "-t", "secure", "-o", "beginning",
                 "-c", "4", "-e", "-q"], capture_output=True, text=True, timeout=30, check=False)
            assert out.returncode == 0, out.stderr
            assert out.stdout.split() == [g.decode() for g in got]

        # a plaintext client gets no answer it can read
        plain = AdminClient({"bootstrap.servers": b.bootstrap, "socket.timeout.ms": 2000})
        with pytest.raises(KafkaException):
            plain.list_topics(timeout=3)

        r = httpx.get(f"https://{b.http}/v1/basins", verify=pki["ca"], timeout=10)
        assert r.status_code == 200, r.text
        assert "default-basin" in r.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{b.http}/v1/basins", timeout=3)
    finally:
        assert b.stop() == 0


def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path, pki):
    b = tls_broker(tmp_path, pki, client_ca=True)
    try:
        ssl_conf = {"bootstrap.servers": b.bootstrap, "security.protocol": "SSL",
                    "ssl.ca.location": pki["ca"], "socket.timeout.ms": 3000}
        anonymous = AdminClient(ssl_conf)
        with pytest.raises(KafkaException):
            anonymous.list_topics(timeout=4)
        p = Producer({**ssl_conf, "ssl.certificate.location": pki["client"],
                      "ssl.key.location": pki["client_key"]})
        p.produce("mtls", value=b"with a certificate")
        assert p.flush(20) == 0
        kp = KafkaProducer(bootstrap_servers=b.bootstrap, security_protocol="SSL",
                           ssl_cafile=pki["ca"], ssl_certfile=pki["client"],
                           ssl_keyfile=pki["client_key"])
        assert kp.send("mtls", b"kafka-python too").get(20).offset == 1
        kp.close()
    finally:
        assert b.stop() == 0


def sasl_broker(tmp_path, pki=None):
    extra = ["--set", "server.kafka_sasl_users=alice:alice-secret,bob:b0b:with:colons"]
    if pki is not None:
        extra += ["--set", f"server.kafka_tls_cert_file={pki['server']}",
                  "--set", f"server.kafka_tls_key_file={pki['server_key']}"]
    return start_broker(str(tmp_path / "data"), extra=extra)


def test_sasl_users_authenticate_and_others_are_refused(tmp_path):
    b = sasl_broker(tmp_path)
    try:
        for i, mechanism in enumerate(["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]):
            conf = {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanisms": mechanism}
            p = Producer({**conf, "sasl.username": "alice", "sasl.password": "alice-secret"})
            p.produce("sasl", value=b"alice with %s" % mechanism.encode())
            assert p.flush(20) == 0
            kp = KafkaProducer(bootstrap_servers=b.bootstrap,
                               security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                               sasl_plain_username="bob",
                               sasl_plain_password="b0b:with:colons")
            assert kp.send("sasl", b"bob with %s" % mechanism.encode()).get(20).offset == \
                2 * i + 1
            kp.close()
        if shutil.which("kcat"):  # Debian's kcat, built on librdkafka 2.0
            for mechanism in ("SCRAM-SHA-256", "PLAIN"):
                out = subprocess.run(
                    ["kcat", "-b", b.bootstrap, "-X", "security.protocol=sasl_plaintext",
                     "-X", f"sasl.mechanisms={mechanism}", "-X", "sasl.username=alice",
                     "-X", "sasl.password=alice-secret", "-C", "-t", "sasl", "-o",
                     "beginning", "-c", "2", "-e", "-q"],
                    capture_output=True, text=True, timeout=30, check=False)
                assert out.returncode == 0, out.stderr
                assert out.stdout.splitlines() == ["alice with SCRAM-SHA-512",
                                                   "bob with SCRAM-SHA-512"]

        conf = {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "SCRAM-SHA-256"}
        errors = []
        wrong = AdminClient({**conf, "sasl.username": "alice", "sasl.password": "nope",
                             "error_cb": errors.append})
        with pytest.raises(KafkaException):
            wrong.list_topics(timeout=4)
        wrong.poll(1)  # (error callbacks are served by poll)
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
        unauthenticated = AdminClient({"bootstrap.servers": b.bootstrap,
                                       "socket.timeout.ms": 2000})
        with pytest.raises(KafkaException):
            unauthenticated.list_topics(timeout=3)
        assert "api 3 before SASL authentication" in b.log()
    finally:
        assert b.stop() == 0


def test_sasl_ssl(tmp_path, pki):
    b = sasl_broker(tmp_path, pki)
    try:
        c = Consumer({"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_SSL",
                      "ssl.ca.location": pki["ca"], "sasl.mechanisms": "SCRAM-SHA-256",
                      "sasl.username": "alice", "sasl.password": "alice-secret",
                      "group.id": "sasl-ssl"})
        p = Producer({"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_SSL",
                      "ssl.ca.location": pki["ca"], "sasl.mechanisms": "PLAIN",
                      "sasl.username": "alice", "sasl.password": "alice-secret"})
        p.produce("sasl-ssl", value=b"both")
        assert p.flush(20) == 0
        c.assign([TopicPartition("sasl-ssl", 0, 0)])
        m = c.poll(10)
        assert m is not None and m.error() is None and m.value() == b"both"
        c.close()
    finally:
        assert b.stop() == 0


def test_scram_users_managed_with_the_admin_api(tmp_path):
    """AlterUserScramCredentials sets a user (kept across a restart) who can then log in
    with SCRAM; DescribeUserScramCredentials lists configured and set users; a deleted
    credential no longer logs in."""
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )
    b = sasl_broker(tmp_path)
    try:
        alice = {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                 "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "alice",
                 "sasl.password": "alice-secret"}
        admin = AdminClient(alice)
        [fut] = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192),
            b"carol-secret")]).values()
        fut.result(20)
        described = admin.describe_user_scram_credentials().result(20)
        assert {u: sorted((i.mechanism, i.iterations) for i in d.scram_credential_infos)
                for u, d in described.items()} == {
            "alice": [(ScramMechanism.SCRAM_SHA_256, 4096), (ScramMechanism.SCRAM_SHA_512, 4096)],
            "bob": [(ScramMechanism.SCRAM_SHA_256, 4096), (ScramMechanism.SCRAM_SHA_512, 4096)],
            "carol": [(ScramMechanism.SCRAM_SHA_256, 8192)]}

        b = b.restart()
        carol = {**alice, "bootstrap.servers": b.bootstrap, "sasl.username": "carol",
                 "sasl.password": "carol-secret"}
        p = Producer(carol)
        p.produce("carol", value=b"set through the admin API")
        assert p.flush(20) == 0
        plain = AdminClient({**carol, "sasl.mechanisms": "PLAIN"})
        with pytest.raises(KafkaException):  # (the broker never saw carol's password)
            plain.list_topics(timeout=4)

        admin = AdminClient({**alice, "bootstrap.servers": b.bootstrap})
        [fut] = admin.alter_user_scram_credentials([UserScramCredentialDeletion(
            "carol", ScramMechanism.SCRAM_SHA_256)]).values()
        fut.result(20)
        gone = AdminClient(carol)
        with pytest.raises(KafkaException):
            gone.list_topics(timeout=4)
    finally:
        assert b.stop() == 0


def test_oauthbearer_signed_and_unsigned_tokens(tmp_path):
    """SASL/OAUTHBEARER: librdkafka with a token callback (an RS256 JWT signed by a key of
    the broker's JWKS file) is served, under the token's subject; a token of another key,
    an expired one, or an unsigned one is refused; with `kafka_oauthbearer_unsecured`
    librdkafka's own unsigned tokens (sasl.oauthbearer.config) are taken."""
    import base64
    import json

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                  for _ in range(2))
    nums = key.public_key().public_numbers()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{
        "kty": "RSA", "kid": "k1", "n": b64(nums.n.to_bytes(256, "big")),
        "e": b64(nums.e.to_bytes(3, "big"))}]}))

    def jwt(signer, exp_in: int = 300) -> tuple[str, float]:
        exp = int(time.time()) + exp_in
        head = b64(json.dumps({"alg": "RS256", "kid": "k1"}).encode())
        body = b64(json.dumps({"sub": "svc-orders", "exp": exp, "aud": "kafka"}).encode())
        sig = signer.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        # (librdkafka is told a lifetime ahead, or it would not send an expired token)
        return f"{head}.{body}.{b64(sig)}", time.time() + 300

    b = start_broker(str(tmp_path / "data"), extra=[
        "--set", f"server.kafka_oauthbearer_jwks_url={jwks}",
        "--set", "server.kafka_oauthbearer_expected_audience=kafka"])
    try:
        conf = {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "OAUTHBEARER"}
        p = Producer({**conf, "oauth_cb": lambda _cfg: jwt(key)})
        p.produce("oauth", value=b"signed")
        assert p.flush(20) == 0
        c = Consumer({**conf, "oauth_cb": lambda _cfg: jwt(key), "group.id": "oauth",
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition("oauth", 0, 0)])
        m = c.poll(20)
        assert m is not None and m.value() == b"signed"
        c.close()
        for cb, why in ((lambda _cfg: jwt(other), "signature does not verify"),
                        (lambda _cfg: jwt(key, exp_in=-600), "has expired")):
            with pytest.raises(KafkaException):  # (librdkafka: at once or when used)
                AdminClient({**conf, "oauth_cb": cb}).list_topics(timeout=4)
            assert why in b.log()
        with pytest.raises(KafkaException):
            AdminClient({**conf, "sasl.oauthbearer.config": "principal=dev",
                         "enable.sasl.oauthbearer.unsecure.jwt": True}).list_topics(timeout=4)
        assert "unsigned bearer tokens are not accepted" in b.log()
    finally:
        assert b.stop() == 0
    b = start_broker(str(tmp_path / "data2"), extra=[
        "--set", "server.kafka_oauthbearer_unsecured=true"])
    try:
        p = Producer({"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                      "sasl.mechanisms": "OAUTHBEARER",
                      "sasl.oauthbearer.config": "principal=dev",
                      "enable.sasl.oauthbearer.unsecure.jwt": True})
        p.produce("dev", value=b"unsigned")
        assert p.flush(20) == 0
    finally:
        assert b.stop() == 0


def test_acls_with_the_admin_api(tmp_path):
    """Kafka ACLs (server.kafka_authorizer): a super user manages bindings with
    AdminClient.create_acls / describe_acls / delete_acls; a user may then produce and
    consume exactly what they allow, and gets Kafka's authorization errors elsewhere."""
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )
    b = start_broker(str(tmp_path / "data"), extra=[
        "--set", "server.kafka_sasl_users=admin:admin-secret,alice:alice-secret",
        "--set", "server.kafka_authorizer=true",
        "--set", "server.kafka_super_users=User:admin"])
    base = {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-256"}
    admin_conf = {**base, "sasl.username": "admin", "sasl.password": "admin-secret"}
    alice_conf = {**base, "sasl.username": "alice", "sasl.password": "alice-secret"}
    try:
        admin = AdminClient(admin_conf)
        for f in admin.create_topics([NewTopic("team-a", 1), NewTopic("other", 1)]).values():
            f.result(20)
        allow = AclPermissionType.ALLOW
        bindings = [
            AclBinding(ResourceType.TOPIC, "team-", ResourcePatternType.PREFIXED, "User:alice",
                       "*", AclOperation.WRITE, allow),
            AclBinding(ResourceType.TOPIC, "team-", ResourcePatternType.PREFIXED, "User:alice",
                       "*", AclOperation.READ, allow),
            AclBinding(ResourceType.GROUP, "team-g", ResourcePatternType.LITERAL, "User:alice",
                       "*", AclOperation.READ, allow)]
        for f in admin.create_acls(bindings).values():
            f.result(20)
        listed = admin.describe_acls(AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
            AclPermissionType.ANY)).result(20)
        assert sorted(x.name for x in listed) == ["team-", "team-", "team-g"]

        alice_admin = AdminClient(alice_conf)
        with pytest.raises(KafkaException):  # no ALTER on the cluster
            alice_admin.create_acls(bindings[:1])[bindings[0]].result(20)
        assert set(alice_admin.list_topics(timeout=10).topics) == {"team-a"}

        results = {}

        def report(err, msg):
            results[msg.topic()] = err
        p = Producer({**alice_conf, "linger.ms": 0, "message.timeout.ms": 5000})
        p.produce("team-a", value=b"allowed", on_delivery=report)
        p.produce("other", value=b"denied", on_delivery=report)
        p.flush(15)
        assert results["team-a"] is None
        assert results["other"] is not None and \
            results["other"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

        c = Consumer({**alice_conf, "group.id": "team-g", "auto.offset.reset": "earliest"})
        c.subscribe(["team-a"])
        got = None
        deadline = time.time() + 30
        while got is None and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got = m.value()
        c.commit(asynchronous=False)
        c.close()
        assert got == b"allowed"
        c = Consumer({**alice_conf, "group.id": "not-hers", "auto.offset.reset": "earliest"})
        c.subscribe(["team-a"])
        err = None
        deadline = time.time() + 20
        while err is None and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error():
                err = m.error()
        c.close()
        assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED

        deleted = admin.delete_acls([AclBindingFilter(
            ResourceType.TOPIC, "team-", ResourcePatternType.PREFIXED, None, None,
            AclOperation.ANY, AclPermissionType.ANY)])
        assert len(list(deleted.values())[0].result(20)) == 2
        b = b.restart()  # bindings are kept
        admin = AdminClient({**admin_conf, "bootstrap.servers": b.bootstrap})
        listed = admin.describe_acls(AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
            AclPermissionType.ANY)).result(20)
        assert [x.name for x in listed] == ["team-g"]
        assert set(AdminClient({**alice_conf, "bootstrap.servers": b.bootstrap}).list_topics(
            timeout=10).topics) == set()
    finally:
        assert b.stop() == 0
