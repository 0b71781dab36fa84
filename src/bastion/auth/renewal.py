"""Certificate renewal for users, bots and hosts (``POST /v1/certs/renew``, issue 18).

Layer: auth. The decision is pure: :func:`renewed_identity` and :func:`renewed_host_identity`
take the presented certificate's identity and the holder's current state and return the
identity to sign. They never widen (ARCHITECTURE.md 6.2): roles, logins and traits are the
presented ones that the holder still has, the expiry never passes the user's original login
expiry (``Identity.renew_until``) nor the roles' ``max_session_ttl``, and the pinned IP, MFA,
device, route and access-request fields are kept as they were. :class:`RenewalService` reads
that state, signs, and for bots advances the generation counter in the same audited
transaction that a copied identity (an old generation) turns into a lock
(``bot.generation_mismatch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bastion.auth.devices import DeviceService
from bastion.auth.issuer import MIN_TTL, HostCerts, UserCerts
from bastion.auth.key_proof import NO_BINDING, KeyBinding, issue_bound
from bastion.auth.server import HOST_CERT_TTL, AuthServer
from bastion.errors import AccessDenied, AlreadyExists, CompareFailed, NotFound
from bastion.locks.matcher import Locked
from bastion.rbac.checker import RoleSet
from bastion.rbac.session_mfa import is_session_identity
from bastion.types.access import Lock, LockSpec, LockTarget, User
from bastion.types.bots import bot_name_of
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

__all__ = [
    "Holder",
    "RenewalService",
    "generation_lock",
    "holder_of",
    "renewed_host_identity",
    "renewed_identity",
]

RENEW_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Holder:
    """What the holder of a user or bot certificate may have *now*."""

    roles: frozenset[str]
    """Roles the stored user holds that still exist."""
    traits: dict[str, frozenset[str]]
    logins: frozenset[str]
    """Logins the current roles allow (templates expanded from the current traits)."""
    max_ttl: timedelta
    """The roles' ``max_session_ttl`` (the shortest of them)."""
    pin_source_ip: bool = False


def holder_of(role_set: RoleSet, roles: list[str], traits: dict[str, list[str]]) -> Holder:
    """The holder state from a role set built over the stored user's roles and traits."""
    return Holder(
        roles=frozenset(roles),
        traits={k: frozenset(v) for k, v in traits.items()},
        logins=frozenset(role_set.allowed_logins()),
        max_ttl=role_set.max_session_ttl(),
        pin_source_ip=role_set.options().pin_source_ip,
    )


def renewed_identity(
    presented: Identity,
    holder: Holder,
    now: datetime,
    requested_ttl: timedelta,
    remote_addr: str = "",
) -> Identity:
    """The identity a user or bot certificate renews into (pure).

    Raises:
        AccessDenied: not renewable (host, local admin, per-session MFA certificate), no role
            left, or a user's login has reached its original expiry.
    """
    if presented.kind not in ("user", "bot") or is_session_identity(presented):
        raise AccessDenied(
            f"a {presented.kind} certificate of this kind cannot be renewed; log in again"
        )
    roles = tuple(r for r in presented.roles if r in holder.roles)
    if not roles:
        raise AccessDenied(f"{presented.user!r} holds none of its certificate's roles any more")
    traits: dict[str, tuple[str, ...]] = {}
    for key, values in presented.traits.items():
        kept = tuple(v for v in values if v in holder.traits.get(key, frozenset()))
        if kept:
            traits[key] = kept
    logins = tuple(login for login in presented.logins if login in holder.logins)
    ttl = min(max(requested_ttl, MIN_TTL), holder.max_ttl)
    expires = now + ttl
    ceiling: datetime | None = None
    if presented.kind == "user":
        ceiling = presented.renew_until if presented.renew_until is not None else presented.expires
        if ceiling <= now:
            raise AccessDenied("your login has expired; log in again (bsh login)")
        expires = min(expires, ceiling)
    pinned = presented.pinned_ip or (remote_addr if holder.pin_source_ip else "")
    return presented.model_copy(
        update={
            "roles": roles,
            "traits": traits,
            "logins": logins,
            "expires": expires,
            "pinned_ip": pinned,
            "renew_until": ceiling,
            "generation": presented.generation + 1 if presented.kind == "bot" else 0,
        }
    )


def renewed_host_identity(presented: Identity, now: datetime, requested_ttl: timedelta) -> Identity:
    """A host certificate renews with the same identity, for at most :data:`HOST_CERT_TTL`.

    Raises:
        AccessDenied: not a host identity.
    """
    if presented.kind != "host" or not presented.host_id:
        raise AccessDenied("only a joined host renews a host certificate")
    ttl = min(max(requested_ttl, MIN_TTL), HOST_CERT_TTL)
    return presented.model_copy(update={"expires": now + ttl})


def generation_lock(bot: str, presented: int, stored: int, now: datetime) -> Lock:
    """The lock a copied bot identity earns (pure)."""
    return Lock(
        metadata=Metadata(
            name=f"bot-{bot}-generation-{stored}",
            description=f"bot {bot}: a renewal presented generation {presented}, not {stored}",
        ),
        spec=LockSpec(
            target=LockTarget(bot=bot),
            message=(
                f"bot {bot} renewed with an old certificate generation ({presented}; auth has "
                f"{stored}): its identity was copied. Investigate, then bctl rm lock/NAME and "
                f"bctl bots add {bot} again"
            ),
            created_by="bastion",
            created=now,
        ),
    )


class RenewalService:
    """Renews the caller's own certificate (the gate has admitted it: current epoch, not
    locked, not a deleted user)."""

    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth

    async def renew(
        self,
        presented: Identity,
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
        binding: KeyBinding = NO_BINDING,
    ) -> UserCerts:
        """Renew a user or bot certificate for ``public_key`` (a new key, or the same one).

        ``binding``: the device ceremony over a fresh challenge (the renewed certificates then
        carry the device it proves) and a TPM-held SSH key it certified (``require_hardware_key``);
        without it the device is only re-checked and no key is attested
        (:func:`~bastion.auth.key_proof.issue_bound`).

        Raises:
            AccessDenied: see :func:`renewed_identity`; Locked: a copied bot identity.
        """
        auth = self.auth
        user: User | None = None
        if "sso_connector" in presented.traits and presented.kind == "user":
            roles = [r for r in presented.roles if await self._role_exists(r)]
            traits = {k: list(v) for k, v in presented.traits.items()}
        else:
            user = await auth.users.get(presented.user)
            roles, traits = list(user.spec.roles), user.spec.traits
        role_set = RoleSet.from_roles([await auth.roles.get(r) for r in roles], traits)
        holder = holder_of(role_set, roles, traits)
        identity = renewed_identity(presented, holder, auth.clock.now(), ttl, remote_addr)
        identity = await DeviceService(auth).recheck(identity, remote_addr)  # still trusted?
        if presented.kind == "bot":
            return await self._renew_bot(presented, identity, public_key, remote_addr)
        certs = await issue_bound(auth, identity, public_key, remote_addr, binding)
        await auth.audit.emit(
            "cert.renewed", user=presented.user, remote_addr=remote_addr, kind=presented.kind
        )
        return certs

    async def _role_exists(self, name: str) -> bool:
        try:
            await self.auth.roles.get(name)
        except NotFound:
            return False
        return True

    async def _renew_bot(
        self, presented: Identity, identity: Identity, public_key: str, remote_addr: str
    ) -> UserCerts:
        auth = self.auth
        bot = bot_name_of(presented.user)
        for _ in range(RENEW_ATTEMPTS):
            user = await auth.users.get(presented.user)
            if user.spec.bot is None:
                raise AccessDenied(f"{presented.user!r} is not a bot")
            stored = user.spec.bot.generation
            if presented.generation != stored:
                await self._mismatch(bot, presented, stored, remote_addr)
            identity = identity.model_copy(update={"generation": stored + 1})
            certs = await auth.issuer.issue_user(identity, public_key, remote_addr)
            updated = user.model_copy(deep=True)
            assert updated.spec.bot is not None
            updated.spec.bot.generation = stored + 1
            try:
                await auth.audited(
                    "bot.renew",
                    [auth.users.update_op(updated)],
                    presented.user,
                    f"bot/{bot}",
                    remote_addr=remote_addr,
                    generation=stored + 1,
                )
            except CompareFailed:
                continue  # a concurrent change of the user: read the generation again
            return certs
        raise CompareFailed(f"bot {bot!r} is changing too fast; try again")

    async def _mismatch(self, bot: str, presented: Identity, stored: int, remote: str) -> None:
        """Lock the bot (lock and event in one transaction). Raises: Locked."""
        auth = self.auth
        lock = generation_lock(bot, presented.generation, stored, auth.clock.now())
        try:
            await auth.audited(
                "bot.generation_mismatch",
                [auth.locks.create_op(lock)],
                presented.user,
                f"bot/{bot}",
                outcome="failure",
                remote_addr=remote,
                presented_generation=presented.generation,
                stored_generation=stored,
                lock=lock.name,
            )
        except AlreadyExists:
            pass  # a second copy: the lock is there already; refuse all the same
        raise Locked(f"locked: {lock.spec.message}", lock.name)

    async def renew_host(
        self,
        presented: Identity,
        public_key: str,
        dns_names: list[str],
        ip_addresses: list[str],
        ttl: timedelta,
        remote_addr: str,
    ) -> HostCerts:
        """Renew a joined host's certificates (same principals and names as the presented
        certificate; signed by the CA's current active key, so a rotation completes)."""
        identity = renewed_host_identity(presented, self.auth.clock.now(), ttl)
        host_name = (presented.traits.get("hostname") or ("",))[0]
        names = [host_name] if host_name else []
        principals = [presented.host_id, *names]
        principals += [f"{host_name}.{self.auth.cluster}"] if host_name else []
        principals += ip_addresses
        dns = list(dict.fromkeys([*names, *dns_names]))
        certs = await self.auth.issuer.issue_host(
            identity,
            public_key,
            list(dict.fromkeys(principals)),
            dns,
            ip_addresses,
            identity.expires - self.auth.clock.now(),
            remote_addr,
        )
        await self.auth.audit.emit(
            "cert.renewed", user=presented.host_id, remote_addr=remote_addr, kind="host"
        )
        return certs
