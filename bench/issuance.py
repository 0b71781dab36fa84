"""Certificate issuance per login versus raw signing, measured in the same run.

One "login" issues what ``bsh login`` gets: an SSH user certificate and an X.509 user
certificate, both carrying the identity document, from Ed25519 CAs. Baselines, same run:

* raw library signing (the target's reference): asyncssh's ``generate_user_certificate`` for the
  SSH certificate plus a bare cryptography ``CertificateBuilder.sign`` of an X.509 client
  certificate (same key types, same validity, no identity document);
* the floor: two bare Ed25519 signatures over messages of the same sizes;
* the whole auth path (Issuer with audit on the in-memory backend), for information.

Target: issuing costs at most 2x raw library signing.

Run: ``python bench/issuance.py`` (about 4 seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncssh
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from bastion.ca.sshcert import ssh_user_certificate
from bastion.ca.x509 import issue_user_certificate, self_signed_ca
from bastion.types.identity import Identity

BUDGET_SECONDS = 0.8
TARGET_RATIO = 2.0


def rate(fn: Callable[[], object], budget: float = BUDGET_SECONDS) -> float:
    """Calls per second of ``fn`` over about ``budget`` seconds (after a short warm-up)."""
    for _ in range(20):
        fn()
    count, start = 0, time.perf_counter()
    deadline = start + budget
    while (now := time.perf_counter()) < deadline:
        for _ in range(10):
            fn()
        count += 10
    return count / (now - start)


def main() -> None:
    now = datetime.now(UTC)
    identity = Identity(
        cluster="example",
        user="alice",
        roles=("dev", "ops"),
        traits={"team": ("blue",)},
        logins=("alice", "root"),
        expires=now + timedelta(hours=12),
        device_id="dev-1",
        mfa_verified=True,
    )
    ssh_ca = ed25519.Ed25519PrivateKey.generate()
    tls_ca = ed25519.Ed25519PrivateKey.generate()
    tls_ca_cert = self_signed_ca(
        tls_ca, "example tls_user CA", "example", timedelta(days=365), now=now
    )
    user_key = ed25519.Ed25519PrivateKey.generate().public_key()

    def login() -> None:
        ssh_user_certificate(ssh_ca, user_key, identity, serial=1, valid_after=now)
        issue_user_certificate(tls_ca_cert, tls_ca, user_key, identity, not_before=now)

    ssh_size = len(ssh_user_certificate(ssh_ca, user_key, identity, serial=1, valid_after=now))
    x509_size = len(
        issue_user_certificate(
            tls_ca_cert, tls_ca, user_key, identity, not_before=now
        ).public_bytes(serialization.Encoding.DER)
    )
    ssh_message, x509_message = b"s" * ssh_size, b"x" * x509_size

    def raw_sign() -> None:
        ssh_ca.sign(ssh_message)
        tls_ca.sign(x509_message)

    peer_ca = asyncssh.generate_private_key("ssh-ed25519")
    peer_user = asyncssh.generate_private_key("ssh-ed25519")

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    issuer = tls_ca_cert.subject

    def library_login() -> None:
        peer_ca.generate_user_certificate(
            peer_user, "alice", principals=["alice", "root"], valid_before=identity.expires
        )
        (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(user_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(identity.expires)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(tls_ca, None)
        )

    async def full_path_rate() -> float:
        from bastion.logging import configure_logging
        from bastion.rbac.checker import RoleSet
        from bastion.testing import make_auth, new_public_key

        configure_logging("warning")
        fx = await make_auth()
        roles = [await fx.auth.roles.get("access")]
        traits = {"logins": ["alice", "root"]}
        ident = fx.auth.issuer.user_identity(
            cluster="test.local",
            user="alice",
            roles=["access"],
            traits=traits,
            role_set=RoleSet.from_roles(roles, traits),
            requested_ttl=timedelta(hours=8),
        )
        _, pub = new_public_key()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < BUDGET_SECONDS:
            await fx.auth.issuer.issue_user(ident, pub, "127.0.0.1")
            count += 1
        return count / (time.perf_counter() - start)

    issuance = rate(login)
    library = rate(library_login)
    raw = rate(raw_sign)
    full = asyncio.run(full_path_rate())
    ratio = library / issuance
    print(f"certificate sizes: ssh {ssh_size} B, x509 {x509_size} B (both with identity)")
    print(f"bastion issuance:            {issuance:9.0f} logins/s (1 SSH + 1 X.509 cert each)")
    print(
        f"raw library signing:         {library:9.0f} logins/s (asyncssh SSH + cryptography X.509)"
    )
    print(f"floor, bare Ed25519 sign x2: {raw:9.0f} pairs/s")
    print(f"full auth path (+audit):     {full:9.0f} logins/s")
    print(f"cost ratio issuance/library: {ratio:9.2f}x (target <= {TARGET_RATIO:.1f}x)")
    print(f"cost ratio issuance/floor:   {raw / issuance:9.2f}x")
    print("PASS" if ratio <= TARGET_RATIO else "MISS: issuance costs more than the target")


if __name__ == "__main__":
    main()
