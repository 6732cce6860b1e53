"""Enrollment: a one-time token buys this device a credential; the host's certificate is pinned.

The certificate is pinned by trusting it, and only it: the TLS context's sole trust anchor is
the certificate seen at enrollment (checked against ``--pin`` when the user has it), so a host
that shows any other certificate fails the handshake before a byte of data is sent.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from edge_agent.errors import EnrollmentError, HostUnreachableError, PinMismatchError
from edge_agent.sync import wire


@dataclass(frozen=True)
class Enrollment:
    """What the device keeps after enrolling (a 0600 file: the credential is a secret)."""

    host_url: str
    device_id: str
    credential: str
    cert_pem: str
    cert_sha256: str
    expires_at: float
    enrolled_at: float
    limits: dict[str, int]
    trusted_root: dict[str, Any] | None = None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash leaves the old enrollment or the new one, never half

    @classmethod
    def load(cls, path: Path) -> Enrollment:
        if not path.exists():
            raise EnrollmentError(
                "this device is not enrolled: run `edge-agent sync enroll HOST_URL TOKEN` "
                "with a token from `edge-agent host enroll-token`"
            )
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise EnrollmentError(f"{path} is damaged ({exc}): enroll again") from exc

    @property
    def host_limits(self) -> wire.Limits:
        return wire.Limits(**self.limits)


def pinned_context(cert_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly one certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # the pin is the identity; home hosts are often reached by IP
    ctx.verify_mode = ssl.CERT_REQUIRED
    # The pinned leaf is a trust anchor in its own right, even when a CA issued it.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cadata=cert_pem)
    return ctx


def fetch_certificate(url: str, timeout_s: float = 10.0) -> str:
    """The PEM certificate the host at `url` shows (not verified: the caller pins it)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise EnrollmentError(f"{url!r}: the host URL must be https://HOST[:PORT]")
    try:
        return ssl.get_server_certificate((parts.hostname, parts.port or 443), timeout=timeout_s)
    except (OSError, ssl.SSLError) as exc:
        raise HostUnreachableError(f"cannot reach {url}: {exc}") from exc


def enroll(
    url: str,
    token: str,
    *,
    pin: str | None = None,
    timeout_s: float = 30.0,
    clock: Any = time.time,
) -> Enrollment:
    """Enroll with the host at `url`. With `pin`, the host's certificate must match it before
    the token is sent; without, the certificate seen now is trusted from here on."""
    url = url.rstrip("/")
    cert_pem = fetch_certificate(url, timeout_s)
    seen = wire.fingerprint(ssl.PEM_cert_to_DER_cert(cert_pem))
    if pin is not None and wire.normalize_pin(pin) != seen:
        raise PinMismatchError(
            f"the host's certificate is sha256:{seen}, not the pin you gave; "
            "check the address, or ask the host's owner for its `enroll-token` output"
        )
    request = wire.EnrollRequest(token=token, cert_sha256=seen)
    with httpx.Client(base_url=url, verify=pinned_context(cert_pem), timeout=timeout_s) as http:
        response = _post(http, "/v1/enroll", request.model_dump())
    answer = wire.EnrollResponse.model_validate_json(response.content)
    return Enrollment(
        host_url=url,
        device_id=answer.device_id,
        credential=answer.credential,
        cert_pem=cert_pem,
        cert_sha256=seen,
        expires_at=answer.expires_at,
        enrolled_at=clock(),
        limits=answer.limits.model_dump(),
        trusted_root=answer.trusted_root,
    )


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    try:
        response = http.post(path, json=body)
    except httpx.TransportError as exc:
        if pin_failed(exc):
            raise PinMismatchError(
                f"the host's certificate changed during enrollment: {exc}"
            ) from exc
        raise HostUnreachableError(f"cannot reach {http.base_url}: {exc}") from exc
    if response.status_code != 200:
        raise EnrollmentError(f"the host refused enrollment: {describe(response)}")
    return response


def pin_failed(exc: BaseException) -> bool:
    """Whether a transport error is the pinned certificate not matching."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def describe(response: httpx.Response) -> str:
    """`status: detail` from a host error answer."""
    try:
        detail = response.json().get("detail", "")
    except ValueError:
        detail = response.text[:200]
    return f"{response.status_code} {detail}".strip()
