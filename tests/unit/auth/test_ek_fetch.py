"""Completing EK chains from AIA URIs: the hop loop, the cache and its fallbacks, with an
injected fetcher (the HTTP fetch itself runs in tests/integration/test_devices_ek_fetch.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from bastion.auth.ek_fetch import (
    CACHE_TTL,
    IssuerCache,
    IssuerFetchError,
    complete_chain,
    fetch_issuer,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _cert(name: str, issuer: Pair | None = None, aia: str = "", ca: bool = True) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if name else [])
    sign_cert, sign_key = issuer or (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(sign_cert.subject if sign_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if aia:
        method = AuthorityInformationAccessOID.CA_ISSUERS
        access = x509.AccessDescription(method, x509.UniformResourceIdentifier(aia))
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), False)
    return builder.sign(sign_key, hashes.SHA256()), key


class Vendor:
    """A vendor PKI: root -> mid -> EK CA -> EK, each below the root naming its issuer's URL."""

    def __init__(self) -> None:
        self.root = _cert("Vendor Root")
        self.mid = _cert("Vendor Mid", self.root, aia="http://pki.example/root.crt")
        self.ek_ca = _cert("Vendor EK CA", self.mid, aia="http://pki.example/mid.crt")
        self.leaf = _cert("", self.ek_ca, aia="http://pki.example/ekca.crt", ca=False)[0]
        self.served = {
            "http://pki.example/ekca.crt": [self.ek_ca[0]],
            "http://pki.example/mid.crt": [self.mid[0]],
            "http://pki.example/root.crt": [self.root[0]],
        }
        self.asked: list[str] = []
        self.down = False

    async def fetch(self, uri: str) -> list[x509.Certificate]:
        self.asked.append(uri)
        if self.down:
            raise IssuerFetchError(uri, "timed out")
        return self.served[uri]


async def test_two_hops_fetched_and_the_root_never() -> None:
    vendor, cache = Vendor(), IssuerCache()
    found, fresh = await complete_chain(vendor.leaf, [], [vendor.root[0]], NOW, cache, vendor.fetch)
    assert found == [vendor.ek_ca[0], vendor.mid[0]]
    assert vendor.asked == ["http://pki.example/ekca.crt", "http://pki.example/mid.crt"]
    assert set(fresh) == set(vendor.asked)
    # Nothing is kept until the caller's verification succeeded and it put them.
    vendor.asked.clear()
    await complete_chain(vendor.leaf, [], [vendor.root[0]], NOW, cache, vendor.fetch)
    assert len(vendor.asked) == 2


async def test_at_most_two_hops() -> None:
    vendor = Vendor()
    other_root = _cert("Configured Root")[0]  # the vendor root is not configured
    found, _ = await complete_chain(vendor.leaf, [], [other_root], NOW, IssuerCache(), vendor.fetch)
    assert found == [vendor.ek_ca[0], vendor.mid[0]]
    assert "http://pki.example/root.crt" not in vendor.asked


async def test_kept_copies_are_used_fresh_and_when_the_vendor_is_down(tmp_path: Path) -> None:
    vendor, cache = Vendor(), IssuerCache(tmp_path / "ek")
    roots = [vendor.mid[0]]  # the mid CA configured: one hop
    found, fresh = await complete_chain(vendor.leaf, [], roots, NOW, cache, vendor.fetch)
    for uri, certs in fresh.items():
        await cache.put(uri, certs, NOW)
    assert len(list((tmp_path / "ek").glob("*.pem"))) == 1
    vendor.asked.clear()
    assert (await complete_chain(vendor.leaf, [], roots, NOW, cache, vendor.fetch))[0] == found
    assert vendor.asked == []  # fresh in memory
    # A restarted auth server reads the disk copy; stale: asked again, down: the copy serves.
    restarted = IssuerCache(tmp_path / "ek")
    vendor.down = True
    later = NOW + CACHE_TTL + timedelta(seconds=1)
    found2, fresh2 = await complete_chain(vendor.leaf, [], roots, later, restarted, vendor.fetch)
    assert found2 == found and fresh2 == {} and vendor.asked == ["http://pki.example/ekca.crt"]
    # No copy at all and the vendor down: the one-line error names the URL.
    with pytest.raises(IssuerFetchError) as err:
        await complete_chain(vendor.leaf, [], roots, NOW, IssuerCache(), vendor.fetch)
    assert str(err.value) == (
        "EK certificate issuer could not be fetched from http://pki.example/ekca.crt: timed out"
    )


async def test_a_uri_serving_another_certificate_is_refused() -> None:
    vendor = Vendor()
    vendor.served["http://pki.example/ekca.crt"] = [_cert("Someone Else")[0]]
    with pytest.raises(IssuerFetchError, match="serves no certificate for CN=Vendor EK CA"):
        await complete_chain(vendor.leaf, [], [vendor.root[0]], NOW, IssuerCache(), vendor.fetch)


async def test_nothing_fetched_when_the_bundle_has_the_issuer() -> None:
    vendor = Vendor()
    found, fresh = await complete_chain(
        vendor.leaf, [], [vendor.ek_ca[0]], NOW, IssuerCache(), vendor.fetch
    )
    assert found == [] and fresh == {} and vendor.asked == []


async def test_only_http_and_https_are_fetched() -> None:
    with pytest.raises(IssuerFetchError, match="only http and https"):
        await fetch_issuer("file:///etc/passwd")


async def test_memory_cache_is_bounded() -> None:
    cache = IssuerCache()
    cert = _cert("X")[0]
    for i in range(300):
        await cache.put(f"http://x/{i}", [cert], NOW + timedelta(seconds=i))
    assert await cache.get("http://x/0", NOW) is None
    assert await cache.get("http://x/299", NOW) is not None
