"""Certificate issuance per login versus raw signing, measured in the same run.

One "login" issues what ``bsh login`` gets: an SSH user certificate and an X.509 user
certificate, both carrying the identity document, from Ed25519 CAs. The baseline is the raw cost
of two Ed25519 signatures over messages of comparable size (cryptography), and asyncssh's own
``generate_user_certificate`` as a peer. Target: issuing costs at most 2x raw signing.

Run: ``python bench/issuance.py`` (about 4 seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

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

    def peer_cert() -> None:
        peer_ca.generate_user_certificate(
            peer_user, "alice", principals=["alice", "root"], valid_before=identity.expires
        )

    issuance = rate(login)
    raw = rate(raw_sign)
    peer = rate(peer_cert)
    ratio = raw / issuance
    print(f"certificate sizes: ssh {ssh_size} B, x509 {x509_size} B (both with identity)")
    print(f"bastion issuance:         {issuance:10.0f} logins/s (1 SSH + 1 X.509 cert each)")
    print(f"raw Ed25519 sign x2:      {raw:10.0f} pairs/s")
    print(f"asyncssh user cert (peer):{peer:10.0f} certs/s  = {peer / 2:8.0f} 2-cert logins/s")
    print(f"cost ratio issuance/raw:  {ratio:10.2f}x (target <= {TARGET_RATIO:.1f}x)")
    print(f"vs asyncssh peer:         {(peer / 2) / issuance:10.2f}x asyncssh's time per login")
    print("PASS" if ratio <= TARGET_RATIO else "MISS: issuance costs more than the target")


if __name__ == "__main__":
    main()
