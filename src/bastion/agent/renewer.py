"""A joined agent renews its own host certificate before it expires (issue 18).

Layer: agent (IO shell; the schedule is pure). Nodes, proxies in their own process and database
agents keep a host identity directory (:mod:`bastion.agent.join`). :class:`HostRenewer` renews
it through ``POST /v1/certs/renew`` with a **new key each time**, when
:attr:`RenewPolicy.renew_at` of the lifetime is left (1/3 by default), up to
:attr:`RenewPolicy.jitter` of the wait earlier, retrying with capped exponential backoff while
auth is unreachable. The new key and certificates replace the directory's files as one
(:mod:`bastion.agent.host_files`); then the ``on_renewed`` callbacks hot-swap them: the TLS
context of the tunnels' next connections and of the API calls, the SSH host key and
certificate (and the trusted user CA keys) for new SSH connections. Connections already up
keep what they started with.

Agents of the all-in-one process (its built-in node) hold no joined identity: auth of the same
process reissues theirs (:class:`LocalRenewer`, same schedule and backoff) and the callbacks
swap the SSH host key and certificate the same way.

Because auth signs a renewal with the CA's current key and returns the current trust bundle, a
CA rotation (``bctl auth rotate``) reaches every agent at its next renewal, without a new join:
with short host certificates (``host_certs.ttl``) move to the next phase once they all renewed.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from inspect import isawaitable
from typing import Generic, TypeVar

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.agent.host_files import replace_files
from bastion.agent.join import HostIdentity, load_host_identity
from bastion.agent.remote import RemoteAuth
from bastion.client.profile import new_client_key
from bastion.client.tls import verified_context
from bastion.clock import Clock
from bastion.config.schema import HostCertsConfig
from bastion.contract.renew import RENEW, Renew, Renewed
from bastion.errors import BastionError, ConnectionProblem, LimitExceeded

__all__ = [
    "HostRenewer",
    "LocalRenewer",
    "RenewCall",
    "RenewPolicy",
    "Renewed",
    "cert_validity",
    "remote_renew",
    "renew_delay",
    "retry_delay",
    "swap_remote",
]

log = structlog.get_logger("bastion.agent.renewer")

RenewCall = Callable[[str, timedelta], Awaitable[Renewed]]
"""``(public_key, ttl) -> Renewed``: one renewal (over the API, or in process)."""
OnRenewed = Callable[[HostIdentity], Awaitable[None] | None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RenewPolicy:
    ttl: timedelta = timedelta(days=30)
    """Lifetime asked for at each renewal."""
    renew_at: float = 1 / 3
    """Renew when this fraction of the lifetime is left."""
    jitter: float = 0.1
    """Renew up to this fraction of the wait earlier."""
    retry_base: float = 1.0
    retry_cap: float = 60.0

    @classmethod
    def from_config(cls, config: HostCertsConfig) -> RenewPolicy:
        return cls(ttl=config.ttl, renew_at=config.renew_at, jitter=config.jitter)


def renew_delay(
    not_before: datetime, not_after: datetime, now: datetime, policy: RenewPolicy, rnd: float
) -> float:
    """Seconds from ``now`` until the renewal of a certificate valid ``not_before..not_after``
    (pure; ``rnd`` in [0, 1) picks the jitter).

    The lifetime is the policy's TTL, bounded by the certificate's validity (which starts a
    little before its issue, for clock skew). A certificate that outlives the policy's TTL by
    far (the TTL was lowered since) renews at once.
    """
    left = (not_after - now).total_seconds()
    ttl = policy.ttl.total_seconds()
    if left > ttl * 1.1 + 60:
        return 0.0
    lifetime = min(ttl, (not_after - not_before).total_seconds())
    wait = max(left - lifetime * policy.renew_at, 0.0)
    return wait * (1 - policy.jitter * rnd)


def retry_delay(attempt: int, policy: RenewPolicy, rnd: float) -> float:
    """Backoff before retry ``attempt`` (1-based): half the capped exponential ceiling plus a
    random half (pure)."""
    ceiling = min(policy.retry_cap, policy.retry_base * 2.0 ** min(attempt - 1, 30))
    return ceiling * (0.5 + 0.5 * rnd)


def cert_validity(tls_cert_pem: str) -> tuple[datetime, datetime]:
    """``(not_before, not_after)`` of a PEM X.509 certificate (aware, UTC)."""
    cert = x509.load_pem_x509_certificate(tls_cert_pem.encode())
    return cert.not_valid_before_utc, cert.not_valid_after_utc


class _RenewLoop:
    """Renew before every expiry, with capped exponential backoff while auth is unreachable."""

    policy: RenewPolicy
    _sleep: Callable[[float], Awaitable[None]]
    renewals: int

    def next_delay(self, rnd: float | None = None) -> float:
        raise NotImplementedError

    async def _renew_once(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        """Renew before every expiry, until cancelled."""
        while True:
            delay = self.next_delay()
            log.debug("next host certificate renewal", seconds=round(delay, 1))
            await self._sleep(delay)
            attempt = 0
            while True:
                try:
                    await self._renew_once()
                    break
                except (ConnectionProblem, LimitExceeded, OSError) as exc:
                    attempt += 1
                    wait = retry_delay(attempt, self.policy, random.random())  # noqa: S311
                    log.warning(
                        "cannot renew the host certificate; retrying",
                        error=str(exc), seconds=round(wait, 1),
                    )  # fmt: skip
                except BastionError as exc:
                    attempt += 1
                    wait = self.policy.retry_cap
                    log.error(
                        "auth refused to renew the host certificate; retrying",
                        error=exc.message, code=exc.code, seconds=wait,
                    )  # fmt: skip
                await self._sleep(wait)


async def _run_callbacks(
    callbacks: Sequence[Callable[[T], Awaitable[None] | None]], value: T
) -> None:
    for callback in callbacks:
        try:
            result = callback(value)
            if isawaitable(result):
                await result
        except Exception:  # one consumer failing must not stop the others or the loop
            log.exception("applying the renewed host certificate failed")


class HostRenewer(_RenewLoop):
    """Keeps the host identity in ``identity.dir`` renewed.

    Args:
        identity: the joined identity.
        renew: performs one renewal (``RemoteAuth.send(RENEW, ...)`` for a joined agent).
        policy: lifetime, renewal point, jitter and backoff.
        clock: wall clock for the schedule.
        on_renewed: called with the new identity once its files are in place (hot swaps).
        sleep: ``asyncio.sleep`` (tests pass a fake).
    """

    def __init__(
        self,
        identity: HostIdentity,
        renew: RenewCall,
        policy: RenewPolicy,
        *,
        clock: Clock,
        on_renewed: Sequence[OnRenewed] = (),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.identity = identity
        self._renew = renew
        self.policy = policy
        self._clock = clock
        self.on_renewed = list(on_renewed)
        self._sleep = sleep
        self.renewals = 0
        """Successful renewals so far."""

    def next_delay(self, rnd: float | None = None) -> float:
        """Seconds until the current certificate is due for renewal."""
        not_before, not_after = cert_validity(self.identity.read("tls.crt"))
        r = random.random() if rnd is None else rnd  # noqa: S311 (jitter, not a secret)
        return renew_delay(not_before, not_after, self._clock.now(), self.policy, r)

    async def renew_now(self) -> HostIdentity:
        """Renew once with a new key, replace the files, run the callbacks.

        Raises:
            ConnectionProblem: auth unreachable; BastionError: refused (locked, expired...).
        """
        key = new_client_key()
        public_key = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        reply = await self._renew(public_key, self.policy.ttl)
        if reply.kind != "host" or not reply.ssh_cert or not reply.tls_cert:
            raise ConnectionProblem(f"auth answered a {reply.kind!r} renewal, not a host one")
        ident = self.identity
        info = json.loads(ident.read("identity.json"))
        info["expires"] = reply.expires
        info["renewed"] = self._clock.now().isoformat()
        no_encryption = serialization.NoEncryption()
        files: dict[str, str | bytes] = {
            "key": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, no_encryption
            ),
            "tls.key": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, no_encryption
            ),
            "cert.pub": reply.ssh_cert.strip() + "\n",
            "tls.crt": reply.tls_cert,
            "ca.pem": reply.tls_host_ca,
            "user_ca.pub": "".join(f"{k.strip()}\n" for k in reply.ssh_user_ca),
            "identity.json": json.dumps(info, indent=2),
        }
        if reply.tls_user_ca:
            files["user_ca.pem"] = reply.tls_user_ca
        await asyncio.to_thread(replace_files, ident.dir, files)
        self.identity = load_host_identity(ident.dir)
        self.renewals += 1
        log.info("host certificate renewed", host_id=ident.host_id, expires=reply.expires)
        await _run_callbacks(self.on_renewed, self.identity)
        return self.identity

    async def _renew_once(self) -> None:
        await self.renew_now()


class LocalRenewer(_RenewLoop, Generic[T]):
    """Keeps an in-process agent's host certificate renewed: ``reissue`` has auth of this
    process issue a new one (new key), ``tls_cert_of`` reads its X.509 certificate for the
    schedule, and ``on_renewed`` swaps it in.

    Args:
        current: the host identity issued at start.
        reissue: issues the next one (raises ConnectionProblem or BastionError on failure).
    """

    def __init__(
        self,
        current: T,
        reissue: Callable[[], Awaitable[T]],
        tls_cert_of: Callable[[T], str],
        policy: RenewPolicy,
        *,
        clock: Clock,
        on_renewed: Sequence[Callable[[T], Awaitable[None] | None]] = (),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.current = current
        self._reissue = reissue
        self._tls_cert_of = tls_cert_of
        self.policy = policy
        self._clock = clock
        self.on_renewed = list(on_renewed)
        self._sleep = sleep
        self.renewals = 0

    def next_delay(self, rnd: float | None = None) -> float:
        not_before, not_after = cert_validity(self._tls_cert_of(self.current))
        r = random.random() if rnd is None else rnd  # noqa: S311 (jitter, not a secret)
        return renew_delay(not_before, not_after, self._clock.now(), self.policy, r)

    async def renew_now(self) -> T:
        """Reissue once and run the callbacks."""
        self.current = await self._reissue()
        self.renewals += 1
        log.info("in-process host certificate renewed", renewals=self.renewals)
        await _run_callbacks(self.on_renewed, self.current)
        return self.current

    async def _renew_once(self) -> None:
        await self.renew_now()


def remote_renew(remote: RemoteAuth) -> RenewCall:
    """Renew over the API with the current host certificate."""

    async def renew(public_key: str, ttl: timedelta) -> Renewed:
        return await remote.send(RENEW, Renew(public_key=public_key, ttl=ttl))

    return renew


def swap_remote(remote: RemoteAuth) -> OnRenewed:
    """Make ``remote``'s next API calls (and the watch's next connection) present the renewed
    certificate and trust the renewed host CA bundle."""

    def swap(identity: HostIdentity) -> None:
        remote.ssl = verified_context(identity.read("ca.pem"), identity.tls_cert, identity.tls_key)
        remote.identity = identity

    return swap
