"""The host's TLS certificate: a self-signed one made on first `host serve`, and its
fingerprint, which devices pin at enrollment."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.sync.wire import fingerprint


def self_signed(
    cert_path: Path,
    key_path: Path,
    *,
    names: Sequence[str] = (),
    days: int = 3650,
) -> str:
    """Write a P-256 key (0600) and a certificate for `names` (plus localhost and this host's
    name); returns the fingerprint. Long-lived on purpose: devices pin it, renewing means
    re-enrolling every device."""
    key = ec.generate_private_key(ec.SECP256R1())
    all_names = list(dict.fromkeys([*names, socket.gethostname(), "localhost", "127.0.0.1"]))
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, all_names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in all_names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_fingerprint(cert_path)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def cert_fingerprint(cert_path: Path) -> str:
    """What devices pin: the SHA-256 of the certificate (the first one in the file)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def ensure_certificate(tls_dir: Path) -> tuple[Path, Path]:
    """The host's certificate and key under `tls_dir`, made on first use."""
    cert, key = tls_dir / "host.crt", tls_dir / "host.key"
    if not (cert.exists() and key.exists()):
        self_signed(cert, key)
    return cert, key
