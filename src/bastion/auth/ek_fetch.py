"""Completing a TPM's EK certificate chain with intermediates fetched from the vendor.

Layer: auth (IO at the edge). TPM vendors (Infineon, STMicro, Nuvoton, Intel PTT, AMD fTPM)
issue EK certificates from intermediate CAs that admins rarely have; the EK certificate names
where its issuer is published (Authority Information Access, caIssuers, usually plain http).
:func:`complete_chain` asks the pure :func:`~bastion.auth.device_attest.missing_issuer` what
to fetch, fetches it (:func:`fetch_issuer`: http/https, 5 s, 64 KiB, at most
:data:`~bastion.auth.device_attest.MAX_ISSUER_HOPS` hops) or takes it from the
:class:`IssuerCache`. The caller verifies the completed chain against the configured roots
(``device_trust.ek_ca_bundle``) and only then :meth:`IssuerCache.put` s what it fetched: roots
are never fetched, fetched certificates never anchor trust, and only intermediates that led to
a configured root are kept (in memory, and on disk under the auth data dir).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.auth.device_attest import MAX_ISSUER_BYTES, MAX_ISSUER_HOPS, missing_issuer
from bastion.auth.device_attest import load_issuer_certs as parse_issuer_certs

__all__ = [
    "CACHE_TTL",
    "FETCH_TIMEOUT",
    "IssuerCache",
    "IssuerFetchError",
    "complete_chain",
    "fetch_issuer",
    "issuer_cache",
]

FETCH_TIMEOUT = 5.0
CACHE_TTL = timedelta(days=1)
"""How long a fetched intermediate is used without asking its server again (after that, a
failed fetch still falls back to the kept copy: the verifier checks its validity)."""
MAX_CACHED = 256

Fetch = Callable[[str], Awaitable[list[x509.Certificate]]]


class IssuerFetchError(Exception):
    """One line: ``EK certificate issuer could not be fetched from URL: what failed``."""

    def __init__(self, uri: str, what: str) -> None:
        self.uri = uri
        super().__init__(f"EK certificate issuer could not be fetched from {uri}: {what}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


async def fetch_issuer(uri: str) -> list[x509.Certificate]:
    """GET ``uri`` (http or https; system CAs; environment proxies) and parse the body.

    Raises:
        IssuerFetchError: another scheme, a timeout, a connection or TLS error, a status other
            than 200, a body over 64 KiB, or one that is no DER, PEM or PKCS#7 certificate.
    """
    if not uri.lower().startswith(("http://", "https://")):
        raise IssuerFetchError(uri, "only http and https URLs are fetched")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    headers = {"Accept": "application/pkix-cert, application/pkcs7-mime, */*"}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
            session.get(uri, headers=headers, max_redirects=2) as response,
        ):
            if response.status != 200:
                raise IssuerFetchError(uri, f"HTTP {response.status}")
            data = b""
            while len(data) <= MAX_ISSUER_BYTES:  # read(n) returns what has arrived, up to n
                chunk = await response.content.read(MAX_ISSUER_BYTES + 1 - len(data))
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        raise IssuerFetchError(uri, "timed out") from None
    except aiohttp.TooManyRedirects:
        raise IssuerFetchError(uri, "too many redirects") from None
    except (aiohttp.ClientError, ssl.SSLError, OSError, ValueError) as exc:
        raise IssuerFetchError(uri, _one_line(exc)) from None
    try:
        return parse_issuer_certs(data)
    except ValueError as exc:
        raise IssuerFetchError(uri, str(exc)) from None


@dataclass
class IssuerCache:
    """Fetched intermediates by URI: in memory, and as PEM files in ``folder`` (None: memory
    only) named by the URI's SHA-256, so an auth restart does not ask the vendor again."""

    folder: Path | None = None
    ttl: timedelta = CACHE_TTL
    _memory: dict[str, tuple[datetime, list[x509.Certificate]]] = field(default_factory=dict)

    def _path(self, uri: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{hashlib.sha256(uri.encode()).hexdigest()[:40]}.pem"

    async def get(self, uri: str, now: datetime) -> tuple[list[x509.Certificate], bool] | None:
        """The certificates kept for ``uri`` and whether they are still fresh; None: none."""
        kept = self._memory.get(uri)
        if kept is None:
            path = self._path(uri)
            if path is not None:
                kept = await asyncio.to_thread(_read, path)
                if kept is not None:
                    self._memory[uri] = kept
        if kept is None:
            return None
        stored, certs = kept
        return certs, now - stored < self.ttl

    async def put(self, uri: str, certs: Sequence[x509.Certificate], now: datetime) -> None:
        if len(self._memory) >= MAX_CACHED and uri not in self._memory:
            del self._memory[min(self._memory, key=lambda key: self._memory[key][0])]
        self._memory[uri] = (now, list(certs))
        path = self._path(uri)
        if path is not None:
            await asyncio.to_thread(_write, path, certs, now)


def _read(path: Path) -> tuple[datetime, list[x509.Certificate]] | None:
    try:
        stat = path.stat()
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    return datetime.fromtimestamp(stat.st_mtime, UTC), certs


def _write(path: Path, certs: Sequence[x509.Certificate], now: datetime) -> None:
    pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        os.utime(tmp, (now.timestamp(), now.timestamp()))
        tmp.replace(path)
    except OSError:
        pass  # the disk copy is an optimisation: memory still has it


_CACHES: dict[Path | None, IssuerCache] = {}


def issuer_cache(folder: Path | None) -> IssuerCache:
    """The process's cache for ``folder`` (one per auth data dir; None: memory only)."""
    cache = _CACHES.get(folder)
    if cache is None:
        cache = _CACHES[folder] = IssuerCache(folder)
    return cache


async def complete_chain(
    leaf: x509.Certificate,
    at_hand: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
    cache: IssuerCache,
    fetch: Fetch = fetch_issuer,
) -> tuple[list[x509.Certificate], dict[str, list[x509.Certificate]]]:
    """The intermediates the chain from ``leaf`` lacks, from the cache or their AIA URIs.

    Returns:
        (every intermediate found, for the verifier; the fresh fetches by URI, for the caller
        to :meth:`IssuerCache.put` once the chain verified).

    Raises:
        IssuerFetchError: a fetch failed with no kept copy, or what the URI served is not the
            certificate's issuer.
    """
    found: list[x509.Certificate] = []
    fresh: dict[str, list[x509.Certificate]] = {}
    for _ in range(MAX_ISSUER_HOPS):
        wanted = missing_issuer(leaf, [*at_hand, *found], roots)
        if wanted is None:
            break
        kept = await cache.get(wanted.uri, now)
        if kept is not None and kept[1]:
            certs = kept[0]
        else:
            try:
                certs = await fetch(wanted.uri)
            except IssuerFetchError:
                if kept is None:
                    raise
                certs = kept[0]  # the vendor is down: the kept copy (the verifier checks it)
            else:
                fresh[wanted.uri] = certs
        if not any(cert.subject == wanted.name for cert in certs):
            raise IssuerFetchError(
                wanted.uri, f"it serves no certificate for {wanted.name.rfc4514_string()[:200]}"
            )
        found += certs
    return found, fresh
