"""Routes of bots and certificate renewal (issue 18): ``/v1/bots*``, ``/v1/certs/renew``.

Layer: api. Parsing and serialising only; the rules live in :mod:`bastion.auth.bots` and
:mod:`bastion.auth.renewal`.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web
from cryptography import x509

from bastion.api.binding import Call, bind
from bastion.api.devices import key_binding
from bastion.auth.bots import BotInfo, BotService
from bastion.auth.issuer import HostCerts, UserCerts
from bastion.auth.join_oidc import JWKSCache
from bastion.auth.renewal import RenewalService
from bastion.auth.server import AuthServer
from bastion.contract import bots as b
from bastion.contract import renew as r
from bastion.contract.base import Empty

__all__ = ["add_bot_routes", "peer_names"]

BOT_SERVICE: web.AppKey[BotService] = web.AppKey("bot_service")


def _renewed(certs: UserCerts | HostCerts) -> r.Renewed:
    ident = certs.identity
    common = {
        "kind": ident.kind,
        "user": ident.user,
        "ssh_cert": certs.ssh_cert,
        "tls_cert": certs.tls_cert,
        "ssh_host_ca": certs.ssh_host_ca,
        "tls_host_ca": certs.tls_host_ca,
        "tls_user_ca": certs.tls_user_ca,
        "expires": ident.expires.isoformat(),
        "cluster": ident.cluster,
    }
    if isinstance(certs, HostCerts):
        return r.Renewed(**common, ssh_user_ca=certs.ssh_user_ca, host_id=ident.host_id)
    return r.Renewed(
        **common,
        roles=list(ident.roles),
        logins=list(ident.logins),
        generation=ident.generation,
    )


def _bot(info: BotInfo) -> b.Bot:
    return b.Bot(
        name=info.name,
        user=info.user,
        roles=info.roles,
        logins=info.logins,
        generation=info.generation,
        token=info.token,
    )


def peer_names(request: web.Request) -> tuple[list[str], list[str]]:
    """The DNS names and IP addresses of the caller's X.509 certificate (a host renews with
    exactly the names it has)."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        return [], []
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    ips = [
        str(a)
        for a in san.get_values_for_type(x509.IPAddress)
        if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address)
    ]
    return dns, ips


def add_bot_routes(app: web.Application, auth: AuthServer, jwks: JWKSCache | None = None) -> None:
    """Register the bot and renewal routes."""
    bots = BotService(auth, jwks)
    renewal = RenewalService(auth)
    app[BOT_SERVICE] = bots

    async def renew(call: Call[r.Renew]) -> r.Renewed:
        identity = call.guard.ctx.identity
        body = call.body
        if identity.kind == "host":
            dns, ips = peer_names(call.request)
            host = await renewal.renew_host(
                identity, body.public_key, dns, ips, body.ttl, call.remote
            )
            return _renewed(host)
        renewed = await renewal.renew(
            identity, body.public_key, body.ttl, call.remote, binding=key_binding(body)
        )
        return _renewed(renewed)

    async def join(call: Call[r.BotJoin]) -> r.Renewed:
        body = call.body
        certs = await bots.join(
            token=body.token,
            id_token=body.id_token,
            bot=body.bot,
            public_key=body.public_key,
            ttl=body.ttl,
            remote_addr=call.remote,
            challenge=body.challenge,
            signature=body.signature,
        )
        return _renewed(certs)

    async def challenge(call: Call[r.ChallengeRequest]) -> r.Challenge:
        text, expires = bots.challenge(call.body.bot)
        return r.Challenge(challenge=text, expires=expires.isoformat())

    async def add(call: Call[b.AddBot]) -> b.BotAdded:
        await call.guard.require("user", "create")
        await call.guard.require("token", "create")
        body = call.body
        info, token = await bots.add_bot(
            body.name, body.roles, body.logins, body.ttl, call.guard.ctx.actor, body.oidc,
            body.bound_public_key,
        )  # fmt: skip
        expires = token.resource.metadata.expires
        return b.BotAdded(
            bot=_bot(info),
            token=token.token,
            token_expires=expires.isoformat() if expires else "",
            join_method=token.resource.spec.join_method,
        )

    async def ls(call: Call[Empty]) -> b.Bots:
        await call.guard.require("user", "list")
        return b.Bots(items=[_bot(i) for i in await bots.list_bots()])

    async def rm(call: Call[Empty]) -> b.BotRemoved:
        await call.guard.require("user", "delete")
        await call.guard.require("token", "delete")
        name = call.path("name")
        await bots.remove_bot(name, call.guard.ctx.actor)
        return b.BotRemoved(deleted=name)

    bind(app, r.RENEW, renew)
    bind(app, r.BOT_JOIN, join)
    bind(app, r.BOT_JOIN_CHALLENGE, challenge)
    bind(app, b.BOTS_ADD, add)
    bind(app, b.BOTS_LS, ls)
    bind(app, b.BOTS_RM, rm)
