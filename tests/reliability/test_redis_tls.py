"""Redis over TLS (``rediss://``) with AUTH: a real redis-server with a TLS port and a CA made for the test.

The store loads, publishes and serves through ``rediss://:PASSWORD@host:port/0?ssl_ca_certs=ca.pem`` (sync and
asyncio readers); a server certificate that the given CA did not sign is refused (never silently trusted), and a
plain ``redis://`` URL against the TLS port fails as unavailable instead of hanging. An untrusted certificate is a
``StoreAuthError`` (fix the URL; the online reader still degrades on it, as on any unavailable store).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.online.conftest import MODEL, now_utc
from tests.reliability.async_reads import async_refusal, async_score
from warehouse.errors import StoreAuthError, StoreUnavailableError
from warehouse.store import ScoreReader, ScoreStore
from warehouse.store.local_server import RedisProcess, free_port

PASSWORD = "tls-Pa55-word-6b1e"


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_ca_and_server_cert(where: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"prescore test CA {name}")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    where.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    return (
        _pem(where / "ca.pem", ca.public_bytes(pem)),
        _pem(where / "server.pem", cert.public_bytes(pem)),
        _pem(where / "server.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())),
    )  # fmt: skip


def test_rediss_with_auth_serves_and_an_unknown_ca_is_refused(
    redis_factory: Callable[..., RedisProcess], tmp_path: Path, observe: Callable[..., None]
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki", "good")
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other", "other")
    tls_port = free_port()
    redis_factory(
        password=PASSWORD,
        extra_args=["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                    "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"],
    )  # fmt: skip
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
    ids = [f"e{i}" for i in range(1000)]
    scores = np.linspace(0, 1, len(ids), dtype=np.float32)
    with ScoreStore.from_url(url) as store:
        store.create_run(MODEL, "r1", "v1", now_utc() - timedelta(hours=1), len(ids))
        store.writer(MODEL, "r1").write_batch(ids, scores)
        store.finalize_run(MODEL, "r1")
        store.publish(MODEL, "r1")
    reader = ScoreReader.from_url(url)
    try:
        hits = reader.get_many(MODEL, ids)
    finally:
        reader.close()
    assert [h.score if h else None for h in hits] == pytest.approx(scores.tolist())

    assert async_score(url, MODEL, "e999") == pytest.approx(1.0)

    untrusted = f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={other_ca}"
    with ScoreStore.from_url(untrusted) as store, pytest.raises(StoreAuthError) as refused:
        store.current_run(MODEL)
    message = str(refused.value)
    assert message.startswith("the TLS certificate of Redis could not be verified while"), message
    assert "ssl_ca_certs=" in message and "retrying will not help" in message and PASSWORD not in message

    untrusted_async = async_refusal(untrusted, MODEL, "e1", StoreAuthError)
    assert isinstance(untrusted_async, StoreUnavailableError)  # the online reader degrades on it

    plaintext = f"redis://:{PASSWORD}@127.0.0.1:{tls_port}/0"
    with ScoreStore.from_url(plaintext, socket_timeout=2.0) as store, pytest.raises(StoreUnavailableError) as plain:
        store.current_run(MODEL)
    assert PASSWORD not in str(plain.value)
    observe("redis_tls", entities=len(ids), sync_and_async_reads=True, untrusted_ca_error=str(refused.value),
            plaintext_to_tls_port_error=str(plain.value))  # fmt: skip
