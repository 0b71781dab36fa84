"""Bots: machine users that join with a token or an OIDC identity and renew (issue 18).

Layer: auth. A bot ``NAME`` is the user ``bot-NAME`` (:mod:`bastion.types.bots`) with
``spec.bot`` set, holding the roles and logins the admin gave it. ``bctl bots add`` stores the
user and its single-use join token in one audited transaction; ``bbot start`` exchanges the
token (or, with ``join_method: oidc``, a CI platform's JWT) for a bot certificate of generation
N+1 and then renews it (:mod:`bastion.auth.renewal`). Spending the token, advancing the
generation and the ``bot.join`` event are one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from bastion.auth.issuer import UserCerts
from bastion.auth.join_keypair import (
    challenge_key,
    check_bound_public_key,
    mint_challenge,
    verify_challenge,
    verify_signature,
)
from bastion.auth.join_oidc import JoinTokenError, JWKSCache, key_id, verify_join_token
from bastion.auth.revocation import new_epoch
from bastion.auth.server import AuthServer, NewToken
from bastion.backend.base import Op
from bastion.contract.renew import bound_keypair_message
from bastion.errors import AccessDenied, AlreadyExists, BadParameter, CompareFailed, NotFound
from bastion.locks.matcher import identity_targets
from bastion.rbac.checker import RoleSet
from bastion.services.credentials import hash_secret, new_secret, secrets_equal
from bastion.types.access import (
    BotState,
    OIDCJoinSpec,
    ProvisionToken,
    ProvisionTokenSpec,
    User,
    UserSpec,
)
from bastion.types.bots import BOT_USER_PREFIX, bot_name_of, bot_user, check_bot_name
from bastion.types.codec import validation_problems
from bastion.types.meta import Metadata

__all__ = ["BotInfo", "BotService", "JOIN_REFUSED"]

JOIN_REFUSED = "join token is invalid, expired or already used"
JOIN_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class BotInfo:
    name: str
    user: str
    roles: list[str]
    logins: list[str]
    generation: int
    token: str


def _info(user: User) -> BotInfo:
    state = user.spec.bot or BotState()
    return BotInfo(
        name=bot_name_of(user.name),
        user=user.name,
        roles=list(user.spec.roles),
        logins=list(user.spec.traits.get("logins", [])),
        generation=state.generation,
        token=state.token,
    )


class BotService:
    def __init__(self, auth: AuthServer, jwks: JWKSCache | None = None) -> None:
        self.auth = auth
        self.jwks = jwks or JWKSCache()
        self._challenge_key = challenge_key(auth.deps.kek)

    # ---- admin ---------------------------------------------------------------------------------

    async def add_bot(
        self,
        name: str,
        roles: list[str],
        logins: list[str],
        ttl: timedelta,
        actor: str,
        oidc: OIDCJoinSpec | None = None,
        bound_public_key: str = "",
    ) -> tuple[BotInfo, NewToken]:
        """Create the bot's user and its join token (single use; or an ``oidc`` or
        ``bound_keypair`` token resource named after the bot, which needs no secret) in one
        audited transaction.

        Raises:
            BadParameter: bad name, unknown role; AlreadyExists: the bot exists.
        """
        try:
            check_bot_name(name)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
        known = {r.name for r in await self.auth.roles.list()}
        missing = [r for r in roles if r not in known]
        if not roles or missing:
            raise BadParameter(f"bot {name}: give existing roles (unknown: {missing or 'none'})")
        if oidc is not None and bound_public_key:
            raise BadParameter(f"bot {name}: choose one join method (oidc or a bound key)")
        if bound_public_key:
            bound_public_key = check_bound_public_key(bound_public_key)
        method = "oidc" if oidc else "bound_keypair" if bound_public_key else "token"
        now = self.auth.clock.now()
        secret = new_secret(24) if method == "token" else ""
        digest = hash_secret(secret) if secret else ""
        token_name = digest[:32] if secret else f"bot-{name}-{_TOKEN_SUFFIX[method]}"
        try:
            spec = ProvisionTokenSpec(
                roles=["bot"],
                secret_hash=digest,
                bot_name=name,
                created_by=actor,
                single_use=method == "token",
                join_method=method,
                oidc=oidc,
                bound_public_key=bound_public_key,
            )
        except ValidationError as exc:
            raise BadParameter(f"bot {name}: {validation_problems(exc)}") from None
        token = ProvisionToken(
            metadata=Metadata(name=token_name, expires=now + ttl if secret else None),
            spec=spec,
        )
        user = User(
            metadata=Metadata(name=bot_user(name), description=f"bot {name}"),
            spec=UserSpec(
                roles=roles,
                traits={"logins": logins} if logins else {},
                created_by=actor,
                created=now,
                epoch=new_epoch(),
                bot=BotState(token=token_name),
            ),
        )
        ops: list[Op] = [self.auth.users.create_op(user), self.auth.tokens.create_op(token)]
        try:
            done = await self.auth.audited(
                "bot.create", ops, actor, f"bot/{name}", roles=roles, logins=logins,
                join_method=spec.join_method,
            )  # fmt: skip
        except AlreadyExists:
            raise AlreadyExists(f'bot "{name}" already exists (bctl bots rm {name})') from None
        stored = self.auth.users.written(user, done.items[0])
        return _info(stored), NewToken(secret, self.auth.tokens.written(token, done.items[1]))

    async def list_bots(self) -> list[BotInfo]:
        return [_info(u) for u in await self.auth.users.list() if u.spec.bot is not None]

    async def get_bot(self, name: str) -> User:
        """Raises: NotFound."""
        try:
            user = await self.auth.users.get(bot_user(name))
        except NotFound:
            raise NotFound(f'bot "{name}" not found') from None
        if user.spec.bot is None:
            raise NotFound(f'bot "{name}" not found')
        return user

    async def remove_bot(self, name: str, actor: str) -> None:
        """Delete the bot's user (revoking its certificates: the user epoch lock ends live
        sessions) and then its join tokens, each audited."""
        user = await self.get_bot(name)
        await self.auth.delete_resource("user", user.name, actor)
        for token in await self.auth.tokens.list():
            if token.spec.bot_name == name:
                try:
                    await self.auth.delete_resource("token", token.name, actor)
                except NotFound:
                    pass

    # ---- join ----------------------------------------------------------------------------------

    async def join(
        self,
        *,
        token: str,
        id_token: str,
        bot: str,
        public_key: str,
        ttl: timedelta,
        remote_addr: str,
        challenge: str = "",
        signature: str = "",
    ) -> UserCerts:
        """Exchange a join token (``token``) or an OIDC JWT (``id_token`` for ``bot``'s
        ``oidc`` token resource) for a bot certificate.

        Raises:
            AccessDenied: bad, used or expired token, refused JWT, locked bot.
        """
        if id_token:
            stored, claims = await self._oidc_token(bot, id_token, remote_addr)
        elif challenge or signature:
            stored = await self._bound_keypair(bot, challenge, signature, public_key, remote_addr)
            claims = {}
        else:
            stored, claims = await self._secret_token(token, remote_addr), {}
        name = stored.spec.bot_name
        for _ in range(JOIN_ATTEMPTS):
            try:
                user = await self.get_bot(name)
            except NotFound:
                await self._refused(name, remote_addr, "the token's bot no longer exists")
                raise AccessDenied(JOIN_REFUSED) from None
            assert user.spec.bot is not None
            generation = user.spec.bot.generation + 1
            roles = [await self.auth.roles.get(r) for r in user.spec.roles]
            role_set = RoleSet.from_roles(roles, user.spec.traits)
            identity = self.auth.issuer.user_identity(
                cluster=self.auth.cluster,
                user=user.name,
                roles=user.spec.roles,
                traits=user.spec.traits,
                role_set=role_set,
                requested_ttl=ttl,
                kind="bot",
                user_epoch=user.spec.epoch,
            ).model_copy(update={"generation": generation})
            locked = await self.auth.lock_decision(identity_targets(identity))
            if not locked.allowed:
                await self._refused(name, remote_addr, locked.reason)
                locked.raise_if_denied()
            certs = await self.auth.issuer.issue_user(identity, public_key, remote_addr)
            updated = user.model_copy(deep=True)
            assert updated.spec.bot is not None
            updated.spec.bot.generation = generation
            ops: list[Op] = [self.auth.users.update_op(updated)]
            if stored.spec.single_use:
                ops.append(self.auth.tokens.delete_op(stored.name, stored.metadata.revision))
            fields: dict[str, Any] = {
                "remote_addr": remote_addr,
                "method": stored.spec.join_method,
                "token": stored.name,
                "generation": generation,
            }
            fields.update({f"claim_{k}": claims[k] for k in _AUDITED_CLAIMS if k in claims})
            try:
                await self.auth.audited("bot.join", ops, user.name, f"bot/{name}", **fields)
            except NotFound as exc:
                if exc.key == self.auth.tokens.key(stored.name):
                    await self._refused(name, remote_addr, "join token used concurrently")
                    raise AccessDenied(JOIN_REFUSED) from None
                continue
            except CompareFailed:
                if stored.spec.single_use:
                    try:  # spent meanwhile, or only the user changed?
                        stored = await self.auth.tokens.get(stored.name)
                    except NotFound:
                        await self._refused(name, remote_addr, "join token used concurrently")
                        raise AccessDenied(JOIN_REFUSED) from None
                continue
            return certs
        raise CompareFailed(f"bot {name!r} is changing too fast; try again")

    async def _secret_token(self, token: str, remote_addr: str) -> ProvisionToken:
        digest = hash_secret(token) if token else ""
        try:
            stored: ProvisionToken | None = (
                await self.auth.tokens.get(digest[:32]) if token else None
            )
        except NotFound:
            stored = None
        if (
            stored is None
            or stored.spec.join_method != "token"
            or not stored.spec.bot_name
            or not secrets_equal(stored.spec.secret_hash, digest)
        ):
            await self._refused("", remote_addr, "unknown, expired or used bot join token")
            raise AccessDenied(JOIN_REFUSED)
        return stored

    async def _oidc_token(
        self, bot: str, id_token: str, remote_addr: str
    ) -> tuple[ProvisionToken, dict[str, Any]]:
        try:
            stored = await self.auth.tokens.get(f"bot-{bot}-oidc")
        except NotFound:
            await self._refused(bot, remote_addr, "no oidc join token for this bot")
            raise AccessDenied(f"bot {bot!r} has no oidc join method") from None
        spec = stored.spec.oidc
        if stored.spec.join_method != "oidc" or spec is None:
            raise AccessDenied(f"bot {bot!r} has no oidc join method")
        try:
            jwks = await self.jwks.keys(spec, key_id(id_token))
            claims = verify_join_token(id_token, jwks, spec, self.auth.clock.now())
        except JoinTokenError as exc:
            await self._refused(bot, remote_addr, exc.message, method="oidc")
            raise
        return stored, claims

    def challenge(self, bot: str) -> tuple[str, datetime]:
        """A challenge for a bound_keypair join of ``bot`` (stateless: nothing is stored)."""
        return mint_challenge(self._challenge_key, bot, self.auth.clock.now())

    async def _bound_keypair(
        self, bot: str, challenge: str, signature: str, public_key: str, remote_addr: str
    ) -> ProvisionToken:
        """The bot's bound_keypair token, once the challenge and the signature check out."""
        try:
            stored = await self.auth.tokens.get(f"bot-{bot}-{_TOKEN_SUFFIX['bound_keypair']}")
        except NotFound:
            await self._refused(bot, remote_addr, "no bound key for this bot", "bound_keypair")
            raise AccessDenied(f"bot {bot!r} has no bound_keypair join method") from None
        if stored.spec.join_method != "bound_keypair" or not stored.spec.bound_public_key:
            raise AccessDenied(f"bot {bot!r} has no bound_keypair join method")
        try:
            verify_challenge(self._challenge_key, challenge, bot, self.auth.clock.now())
            message = bound_keypair_message(challenge, public_key)
            verify_signature(stored.spec.bound_public_key, message, signature)
        except AccessDenied as exc:
            await self._refused(bot, remote_addr, exc.message, "bound_keypair")
            raise
        return stored

    async def _refused(self, bot: str, remote_addr: str, reason: str, method: str = "") -> None:
        await self.auth.audit.emit(
            "bot.join",
            outcome="failure",
            target=f"bot/{bot}" if bot else "bot",
            remote_addr=remote_addr,
            reason=reason,
            method=method or "token",
        )


_TOKEN_SUFFIX = {"oidc": "oidc", "bound_keypair": "keypair", "token": ""}
"""Name of a bot's secretless token resource: ``bot-NAME-SUFFIX``."""
_AUDITED_CLAIMS = ("sub", "repository", "ref", "environment", "workflow", "actor", "iss")


def is_bot_user(name: str) -> bool:
    return name.startswith(BOT_USER_PREFIX)
