"""The host certificate renewer: its schedule (pure), the all-or-nothing file swap, and one
renewal with a fake auth (new key, files replaced, callbacks run, refusals retried)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.agent.join import HostIdentity, load_host_identity
from bastion.agent.renewer import HostRenewer, Renewed, RenewPolicy, renew_delay, retry_delay
from bastion.clock import FakeClock
from bastion.errors import AccessDenied, ConnectionProblem

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SKEW = timedelta(minutes=1)


def test_renews_when_a_third_of_the_lifetime_is_left() -> None:
    policy = RenewPolicy(ttl=timedelta(hours=3), jitter=0)
    nb, na = NOW - SKEW, NOW + timedelta(hours=3)
    assert renew_delay(nb, na, NOW, policy, 0.5) == pytest.approx(2 * 3600)
    assert renew_delay(nb, na, NOW + timedelta(hours=2, minutes=30), policy, 0.5) == 0.0


def test_jitter_only_renews_earlier() -> None:
    policy = RenewPolicy(ttl=timedelta(hours=3), jitter=0.1)
    nb, na = NOW - SKEW, NOW + timedelta(hours=3)
    assert renew_delay(nb, na, NOW, policy, 0.0) == pytest.approx(7200)
    assert renew_delay(nb, na, NOW, policy, 0.999) == pytest.approx(7200 * 0.9, rel=1e-3)


def test_a_certificate_longer_than_the_policy_renews_at_once() -> None:
    policy = RenewPolicy(ttl=timedelta(hours=1))
    assert renew_delay(NOW - SKEW, NOW + timedelta(days=30), NOW, policy, 0.5) == 0.0


@given(
    ttl=st.integers(60, 30 * 86400),
    elapsed=st.floats(0, 1),
    renew_at=st.floats(0.01, 0.99),
    jitter=st.floats(0, 0.99),
    rnd=st.floats(0, 0.999),
)
def test_the_renewal_is_never_after_expiry_nor_before_now(
    ttl: int, elapsed: float, renew_at: float, jitter: float, rnd: float
) -> None:
    policy = RenewPolicy(ttl=timedelta(seconds=ttl), renew_at=renew_at, jitter=jitter)
    nb, na = NOW - SKEW, NOW + timedelta(seconds=ttl)
    now = NOW + timedelta(seconds=ttl * elapsed)
    delay = renew_delay(nb, na, now, policy, rnd)
    assert 0 <= delay <= (na - now).total_seconds()


def test_retry_backoff_is_capped() -> None:
    policy = RenewPolicy(retry_base=1, retry_cap=60)
    assert 0.5 <= retry_delay(1, policy, 0.0) <= 1
    assert retry_delay(40, policy, 0.999) <= 60
    assert retry_delay(40, policy, 0.0) >= 30


def _identity(tmp_path: Path) -> HostIdentity:
    info = {
        "host_id": "h1",
        "host_name": "web1",
        "role": "node",
        "cluster": "c",
        "server": "proxy:3080",
        "expires": NOW.isoformat(),
    }
    (tmp_path / "identity.json").write_text(json.dumps(info))
    for name in ("key", "tls.key", "cert.pub", "tls.crt", "ca.pem", "user_ca.pub"):
        (tmp_path / name).write_text(f"old {name}")
    return load_host_identity(tmp_path)


def _reply(public_key: str) -> Renewed:
    return Renewed(
        kind="host",
        user="h1",
        ssh_cert=f"cert-for {public_key}",
        tls_cert="new tls cert",
        ssh_user_ca=["ssh-ed25519 AAAA user-ca-1", "ssh-ed25519 AAAA user-ca-2"],
        ssh_host_ca=["ssh-ed25519 AAAA host-ca"],
        tls_host_ca="new host ca",
        tls_user_ca="new user ca",
        expires=(NOW + timedelta(hours=1)).isoformat(),
        cluster="c",
        host_id="h1",
    )


async def test_renew_now_rotates_the_key_and_runs_the_callbacks(tmp_path: Path) -> None:
    asked: list[tuple[str, timedelta]] = []

    async def renew(public_key: str, ttl: timedelta) -> Renewed:
        asked.append((public_key, ttl))
        return _reply(public_key)

    seen: list[HostIdentity] = []
    renewer = HostRenewer(
        _identity(tmp_path),
        renew,
        RenewPolicy(ttl=timedelta(hours=1)),
        clock=FakeClock(NOW),
        on_renewed=[seen.append],
    )
    ident = await renewer.renew_now()
    public_key, ttl = asked[0]
    assert public_key.startswith("ssh-ed25519 ") and ttl == timedelta(hours=1)
    assert ident.read("cert.pub") == f"cert-for {public_key}\n"
    assert "BEGIN PRIVATE KEY" in ident.read("tls.key") and ident.read("key") != "old key"
    assert ident.read("user_ca.pub").count("user-ca-") == 2
    assert ident.read("ca.pem") == "new host ca"
    assert (
        json.loads(ident.read("identity.json"))["expires"] == (NOW + timedelta(hours=1)).isoformat()
    )
    assert seen == [ident] and renewer.renewals == 1
    await renewer.renew_now()
    assert asked[1][0] != public_key  # a new key each time


async def test_run_retries_unreachable_and_refused_auth(tmp_path: Path) -> None:
    outcomes: list[Exception | None] = [ConnectionProblem("down"), AccessDenied("locked"), None]
    sleeps: list[float] = []

    async def renew(public_key: str, ttl: timedelta) -> Renewed:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return _reply(public_key)

    class Done(Exception):
        pass

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 3:
            raise Done

    renewer = HostRenewer(
        _identity(tmp_path), renew, RenewPolicy(retry_cap=60), clock=FakeClock(NOW), sleep=sleep
    )
    renewer.next_delay = lambda rnd=None: 5.0  # type: ignore[method-assign]
    with pytest.raises(Done):
        await renewer.run()
    assert sleeps[0] == 5.0  # until due
    assert 0.5 <= sleeps[1] <= 1.0  # unreachable: backoff
    assert sleeps[2] == 60  # refused: the cap
    assert renewer.renewals == 1


def _self_signed(not_after: datetime) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW - SKEW).not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def test_local_renewer_reissues_on_schedule_and_retries() -> None:
    from bastion.agent.renewer import LocalRenewer

    first = _self_signed(NOW + timedelta(hours=3))
    issued: list[str] = []
    outcomes: list[Exception | None] = [ConnectionProblem("auth busy"), None]

    async def reissue() -> str:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        issued.append(_self_signed(NOW + timedelta(hours=6)))
        return issued[-1]

    class Done(Exception):
        pass

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 2:
            raise Done

    seen: list[str] = []
    renewer = LocalRenewer(
        first, reissue, lambda pem: pem, RenewPolicy(ttl=timedelta(hours=3), jitter=0),
        clock=FakeClock(NOW), on_renewed=[seen.append], sleep=sleep,
    )  # fmt: skip
    with pytest.raises(Done):
        await renewer.run()
    assert sleeps[0] == pytest.approx(2 * 3600)  # a third of the lifetime left
    assert 0.5 <= sleeps[1] <= 1.0  # auth failed once: backoff, then reissued
    assert renewer.renewals == 1 and seen == issued and renewer.current == issued[0]
