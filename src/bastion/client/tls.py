"""Every client-side mTLS ``SSLContext`` of Bastion, built in one place (issue 22).

Layer: ``client`` (stdlib ``ssl`` and :mod:`bastion.errors` only: ``bsh proxy ssh``'s fast path
imports this module, and it must stay quick to start).

The rules, for bsh, bctl, bbot, agents and tunnels alike:

* TLS 1.2 is the floor (:data:`MIN_VERSION`).
* The server is verified against the cluster CA the caller pins (``ca_pem``: the profile's
  ``ca.pem``, an identity file's bundle, or the pinned certificates of the ping document), never
  against the system trust store, and its hostname is checked (``check_hostname``).
* The client presents its certificate when it has one (``cert`` + ``key`` files, or PEM text that
  is written to a private temporary directory for the duration of ``load_cert_chain``).
  A ``bsh login --key-store=tpm`` profile has no key file: :func:`profile_context` and
  :func:`resource_context` present its certificates with the TPM-held key, which signs each
  handshake in the TPM (:mod:`bastion.client.device.tpm_tls`, loaded only then).
* Any failure to load that material is one error, :class:`ClientTLSError` (a
  :class:`~bastion.errors.BadParameter`, exit code 2), whose message says what to do.

:func:`unverified_context` is the one exception: it fetches the ping document whose CA the caller
then checks against ``--ca-pin`` (:func:`bastion.client.api.fetch_cluster_ca`); nothing but that
document is ever read over it.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bastion.errors import BadParameter

__all__ = [
    "MIN_VERSION",
    "ClientTLSError",
    "pem_context",
    "profile_context",
    "profile_key_is_tpm",
    "resource_context",
    "unverified_context",
    "verified_context",
]

MIN_VERSION: Final = ssl.TLSVersion.TLSv1_2
"""No client of Bastion negotiates anything older."""


class ClientTLSError(BadParameter):
    """The CA bundle, certificate or key a client context needs is missing or unusable."""


def _trusting(ca_pem: str, what: str, alpn: Sequence[str]) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise ClientTLSError(f"cannot load {what}: {exc}") from None
    ctx.minimum_version = MIN_VERSION
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def verified_context(
    ca_pem: str, cert: Path | None = None, key: Path | None = None, alpn: Sequence[str] = ()
) -> ssl.SSLContext:
    """A client context that trusts only ``ca_pem`` (hostname checked) and presents ``cert``.

    Args:
        ca_pem: the trusted CA certificates (PEM).
        cert, key: the client certificate and key files; no client certificate when either is None.
        alpn: protocols to offer (none when empty).

    Raises:
        ClientTLSError: the CA bundle or the key pair cannot be loaded.
    """
    ctx = _trusting(ca_pem, "the cluster CA certificate", alpn)
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ClientTLSError(f"cannot load the client certificate {cert}: {exc}") from None
    return ctx


def pem_context(
    ca_pem: str,
    cert_pem: str,
    key_pem: str | None = None,
    alpn: Sequence[str] = (),
    key_file: Path | None = None,
) -> ssl.SSLContext:
    """As :func:`verified_context`, with the certificate (and the key) given as PEM text.

    ``load_cert_chain`` only reads files: the PEM text lives in a private temporary directory
    (mode 0700, files 0600) for the duration of the call. ``key_file`` names a key already on
    disk instead of ``key_pem`` (it is not copied).

    Raises:
        ClientTLSError: the CA bundle or the key pair cannot be loaded.
    """
    import tempfile  # only here: bsh proxy ssh's start-up does not pay for it

    ctx = _trusting(ca_pem, "the cluster CA certificate", alpn)
    with tempfile.TemporaryDirectory(prefix="bastion-tls-") as tmp:
        cert_file = Path(tmp) / "cert.pem"
        cert_file.touch(mode=0o600)
        cert_file.write_text(cert_pem)
        if key_file is None:
            key_file = Path(tmp) / "key.pem"
            key_file.touch(mode=0o600)
            key_file.write_text(key_pem or "")
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ClientTLSError(f"cannot load the client certificate: {exc}") from None
    return ctx


def profile_context(
    path: Path, name: str, alpn: Sequence[str], cert_pem: str | None = None
) -> ssl.SSLContext:
    """mTLS with a bsh profile: trusts the profile's ``ca.pem``, presents ``tls.crt`` with the
    profile's key: ``tls.key``, or, in a ``bsh login --key-store=tpm`` profile (``key.tpm`` and
    no ``tls.key``), the TPM-held key, which signs each handshake in the TPM
    (:mod:`bastion.client.device.tpm_tls`). Every bsh path that speaks TLS with the profile's
    certificate builds its context here.

    Args:
        path: the profile directory.
        name: the profile's name (for messages).
        alpn: protocols to offer.
        cert_pem: present this certificate (PEM, e.g. a per-session one) with the profile's key
            instead of ``tls.crt``.

    Raises:
        ClientTLSError: a file is missing or does not load ("run bsh login"), or ``cert_pem``
            does not load with the profile's key.
    """
    tpm = profile_key_is_tpm(path)
    key_file = path / ("key.tpm" if tpm else "tls.key")
    files = [path / "ca.pem", key_file, *([path / "tls.crt"] if cert_pem is None else [])]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ClientTLSError(
            f"profile {name} is incomplete ({missing[0]} is missing): run bsh login"
        )
    try:
        ca_pem = (path / "ca.pem").read_text()
    except OSError as exc:
        raise ClientTLSError(f"profile {name} is unusable ({exc}): run bsh login") from None
    if tpm:
        return _tpm_context(path, name, ca_pem, alpn, cert_pem)
    if cert_pem is not None:
        try:
            return pem_context(ca_pem, cert_pem, alpn=alpn, key_file=path / "tls.key")
        except ClientTLSError as exc:
            raise ClientTLSError(f"the session certificate does not load: {exc.message}") from None
    try:
        return verified_context(ca_pem, path / "tls.crt", path / "tls.key", alpn)
    except ClientTLSError as exc:
        raise ClientTLSError(f"profile {name} is unusable ({exc.message}): run bsh login") from None


def resource_context(
    profile_dir: Path, ca_pem: str, cert_pem: str, key_file: Path, alpn: Sequence[str]
) -> ssl.SSLContext:
    """mTLS with a resource certificate (a database's, an app's) and its key: ``key_file``,
    or, when there is none in a ``--key-store=tpm`` profile, the profile's TPM-held key (the
    certificate was issued for it: ``bsh db login`` / ``bsh apps login`` ask for that key).

    Raises:
        ClientTLSError: the certificate does not load with the key.
    """
    if not key_file.exists() and profile_key_is_tpm(profile_dir):
        return _tpm_context(profile_dir, profile_dir.name, ca_pem, alpn, cert_pem)
    return pem_context(ca_pem, cert_pem, alpn=alpn, key_file=key_file)


def profile_key_is_tpm(path: Path) -> bool:
    """Is the TLS key of the profile in ``path`` TPM-held (``key.tpm`` and no ``tls.key``)?
    A profile written before the TLS key moved into the TPM keeps its software ``tls.key``."""
    return not (path / "tls.key").exists() and (path / "key.tpm").is_file()


def _tpm_context(
    path: Path, name: str, ca_pem: str, alpn: Sequence[str], cert_pem: str | None
) -> ssl.SSLContext:
    import tempfile

    from bastion.client.device.tpm_key import TPMKey, load_blob, tpm_for
    from bastion.client.device.tpm_tls import install_key

    ctx = _trusting(ca_pem, "the cluster CA certificate", alpn)
    try:
        blob = load_blob(path)
        assert blob is not None  # profile_key_is_tpm saw the file
        key = TPMKey(tpm_for(blob), blob)
        if cert_pem is None:
            install_key(ctx, path / "tls.crt", key.public_key, key.sign_digest)
            return ctx
        with tempfile.TemporaryDirectory(prefix="bastion-tls-") as tmp:
            cert_file = Path(tmp) / "cert.pem"
            cert_file.touch(mode=0o600)
            cert_file.write_text(cert_pem)
            install_key(ctx, cert_file, key.public_key, key.sign_digest)
        return ctx
    except BadParameter as exc:
        what = (
            "the session certificate does not load" if cert_pem else f"profile {name} is unusable"
        )
        raise ClientTLSError(f"{what} with the TPM-held key ({exc.message})") from None


def unverified_context() -> ssl.SSLContext:
    """No verification at all: only for the ping whose CA the caller then checks against a pin."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = MIN_VERSION
    return ctx
