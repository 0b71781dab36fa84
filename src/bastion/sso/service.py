"""SSOService: ``bsh login --auth=NAME`` from the request to the certificates.

Layer: sso (orchestration over the auth server). Steps:

1. :meth:`create_request` (bsh, JSON API): connector, the client's public key, the hash of its
   one-time secret and its localhost callback (or none: headless). Returns the request id.
2. :meth:`begin` (browser, ``/web/sso/NAME/start``): binds the browser with a cookie, stores
   ``state``, ``nonce`` and the PKCE verifier (or the SAML request id) and returns the IdP URL.
3. :meth:`finish_oauth` / :meth:`finish_saml` (browser, callback / ACS): checks state and
   binding, verifies what the IdP sent, maps claims to roles, refuses locked users, issues the
   certificates for the client's key and stores them in the request.
4. :meth:`take_result` (bsh, JSON API, long-poll): the certificates against the secret (and the
   one-time code the browser carried to the localhost callback), exactly once.

SSO users have no stored user record: they exist for the session, in their certificates, named
``connector:username`` and keyed by ``(connector, issuer, subject)`` (traits ``sso_*``). Every
failure is audited as ``sso.login`` with outcome ``failure`` and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from bastion.auth.issuer import UserCerts, parse_public_key
from bastion.auth.key_proof import (
    NO_BINDING,
    KeyBinding,
    binding_from_json,
    binding_json,
    check_binding,
    issue_bound,
)
from bastion.auth.server import AuthServer
from bastion.auth.step_up import idp_second_factor
from bastion.backend.base import Put
from bastion.errors import AccessDenied, BadParameter, BastionError, NotFound
from bastion.locks.matcher import LockTargets, identity_targets
from bastion.rbac.checker import RoleSet
from bastion.services.credentials import hash_secret, new_secret, secrets_equal
from bastion.sso import github as gh
from bastion.sso.http import HTTP
from bastion.sso.mapping import SSOIdentity, claims_to_traits, require_roles
from bastion.sso.oidc import OIDCProvider, authorization_url
from bastion.sso.requests import RequestStore, SSORequest
from bastion.sso.revalidate import grant_op, login_epoch
from bastion.sso.saml import SAMLProvider
from bastion.sso.scim import ScimDirectory, connector_rules
from bastion.types.connectors import CONNECTOR_KINDS, GithubConnector, OIDCConnector, SAMLConnector
from bastion.types.meta import Resource
from bastion.types.scim import GROUPS_CLAIM

__all__ = ["MIN_SECRET", "SSOService", "check_client_redirect"]

MIN_SECRET = 32
"""Shortest accepted one-time secret (characters of a urlsafe token)."""
POLL_INTERVAL = 0.25
MAX_WAIT = 55.0
"""Longest single long-poll of :meth:`SSOService.take_result` (seconds)."""

ResultRenderer = Callable[[UserCerts], dict[str, Any]]


def check_client_redirect(url: str) -> str:
    """bsh's callback must be plain http on the loopback interface (``127.0.0.1``/``[::1]``)
    with an explicit port: the certificates' one-time code never leaves the user's machine.

    Raises:
        BadParameter: any other URL.
    """
    message = "client_redirect must be http://127.0.0.1:PORT/... (the local bsh callback)"
    if len(url) > 2048 or any(c.isspace() or not c.isprintable() for c in url):
        raise BadParameter(message)  # urlsplit drops tabs and line breaks; the URL would keep them
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unparsable port or IPv6 address
        raise BadParameter(message) from None
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1") or not port:
        raise BadParameter(message)
    if parts.username or parts.password or parts.fragment:
        raise BadParameter("client_redirect must not carry credentials or a fragment")
    return url


class SSOService:
    def __init__(self, auth: AuthServer, render: ResultRenderer, http: HTTP | None = None) -> None:
        self.auth = auth
        self._render = render
        self._http = http or HTTP()
        self.requests = RequestStore(auth.deps.backend, auth.clock)
        self._oidc: dict[tuple[str, str], OIDCProvider] = {}

    # ---- connectors ----------------------------------------------------------------------------

    async def connector(self, name: str, kind: str | None = None) -> Resource:
        """The connector ``name`` (of ``kind``, or of any connector kind)."""
        for k in [kind] if kind else list(CONNECTOR_KINDS):
            try:
                found: Resource = await self.auth.store(str(k)).get(name)
                return found
            except NotFound:
                continue
        raise NotFound(
            f'no SSO connector "{name}" (bctl get oidc, bctl get saml and bctl get github list '
            "them)"
        )

    async def public_connectors(self) -> list[dict[str, str]]:
        """Name, kind and button label of every connector (for the login page)."""
        out = []
        for kind in CONNECTOR_KINDS:
            for c in await self.auth.store(kind).list():
                out.append({"name": c.name, "kind": kind, "display": c.spec.display or c.name})
        return sorted(out, key=lambda c: c["name"])

    def _oidc_provider(self, connector: OIDCConnector) -> OIDCProvider:
        key = (connector.name, connector.metadata.revision)
        if key not in self._oidc:  # a changed connector (new revision) gets a fresh cache
            self._oidc = {k: v for k, v in self._oidc.items() if k[0] != connector.name}
            self._oidc[key] = OIDCProvider(connector, self._http)
        return self._oidc[key]

    # ---- 1. bsh creates the request ------------------------------------------------------------

    async def create_request(
        self,
        connector_name: str,
        public_key: str,
        ttl: timedelta,
        secret: str,
        client_redirect: str,
        remote_addr: str,
        web: bool = False,
        binding: KeyBinding = NO_BINDING,
    ) -> SSORequest:
        """``binding``: bsh's device proof (over the ping's challenge) and TPM-held SSH key,
        kept with the request and checked at issuance (:func:`issue_bound`)."""
        connector = await self.connector(connector_name)
        parse_public_key(public_key)
        check_binding(binding)
        if len(secret) < MIN_SECRET:
            raise BadParameter(f"secret: at least {MIN_SECRET} random characters are required")
        if client_redirect:
            check_client_redirect(client_redirect)
        request = SSORequest(
            id=new_secret(18),
            connector=connector.name,
            kind=connector.kind,
            public_key=public_key,
            ttl_seconds=int(ttl.total_seconds()),
            secret_hash=hash_secret(secret),
            client_redirect=client_redirect,
            remote_addr=remote_addr,
            web=web,
            key_binding=binding_json(binding),
        )
        return await self.requests.create(request)

    # ---- 2. the browser starts -----------------------------------------------------------------

    async def begin(
        self, connector_name: str, request_id: str, base_url: str, remote_addr: str
    ) -> tuple[str, str]:
        """Returns ``(idp_url, binding)``: where to send the browser, and the cookie value that
        binds this browser to the login."""
        request = await self.requests.get(request_id)
        if request.connector != connector_name:
            raise AccessDenied("this login request belongs to another connector")
        if request.status != "pending":
            raise AccessDenied("this login request was already started; run bsh login again")
        state = f"{request.id}.{new_secret(24)}"
        binding = new_secret(24)
        try:
            connector = await self.connector(request.connector, request.kind)
            url = await self._idp_url(connector, request, state, base_url)
        except BastionError as exc:
            # The provider is unreachable or the connector broken: the waiting bsh (often
            # --headless, on another machine) learns it now instead of at its timeout.
            request.status, request.error = "failed", exc.message
            with contextlib.suppress(BastionError):
                await self.requests.save(request)
            raise
        request.state_hash = hash_secret(state)
        request.binding_hash = hash_secret(binding)
        request.status = "started"
        await self.requests.save(request)
        return url, binding

    async def _idp_url(
        self, connector: Resource, request: SSORequest, state: str, base_url: str
    ) -> str:
        if isinstance(connector, OIDCConnector):
            request.redirect_uri = connector.spec.redirect_url or (
                f"{base_url}/web/sso/{connector.name}/callback"
            )
            request.nonce = new_secret(24)
            request.code_verifier = new_secret(48)
            provider = self._oidc_provider(connector)
            return authorization_url(
                await provider.discovery(),
                connector,
                request.redirect_uri,
                state,
                request.nonce,
                request.code_verifier,
            )
        if isinstance(connector, GithubConnector):
            request.redirect_uri = connector.spec.redirect_url or (
                f"{base_url}/web/sso/{connector.name}/callback"
            )
            request.code_verifier = new_secret(48)
            return gh.authorization_url(
                connector, request.redirect_uri, state, request.code_verifier
            )
        assert isinstance(connector, SAMLConnector)
        saml = SAMLProvider(connector, base_url)
        request.redirect_uri = saml.acs_url
        request.saml_request_id, url = saml.authn_request(state)
        return url

    # ---- 3. the IdP sends the browser back -----------------------------------------------------

    async def finish_oauth(
        self,
        connector_name: str,
        params: dict[str, str],
        binding: str,
        remote_addr: str,
    ) -> SSORequest:
        """OIDC and GitHub callbacks (``code`` + ``state``, or ``error``)."""

        async def verify(request: SSORequest, connector: Resource) -> SSOIdentity:
            if params.get("error"):
                detail = params.get("error_description") or params["error"]
                raise AccessDenied(f"the identity provider refused the login: {detail[:200]}")
            code = params.get("code", "")
            if not code:
                raise AccessDenied("the identity provider sent no authorization code")
            if isinstance(connector, OIDCConnector):
                # RFC 9207: a provider that names itself must be the connector's (mix-up attack).
                if "iss" in params and params["iss"] != connector.spec.issuer_url:
                    raise AccessDenied(
                        f"the callback comes from issuer {params['iss'][:200]!r}, not "
                        f"{connector.spec.issuer_url!r} (mix-up)"
                    )
                provider = self._oidc_provider(connector)
                tokens = await provider.exchange_tokens(
                    code, request.code_verifier, request.redirect_uri
                )
                found = await provider.identity(tokens.id_token, request.nonce,
                                                self.auth.clock.now())  # fmt: skip
                return dataclasses.replace(found, tokens=tokens)
            if isinstance(connector, GithubConnector):
                github = gh.GithubProvider(connector, self._http)
                access = await github.exchange(code, request.code_verifier, request.redirect_uri)
                return await github.identity(access)
            raise AccessDenied(f'connector "{connector_name}" does not take OAuth callbacks')

        return await self._finish(
            connector_name, params.get("state", ""), binding, remote_addr, verify
        )

    async def finish_saml(
        self,
        connector_name: str,
        saml_response: str,
        relay_state: str,
        binding: str,
        base_url: str,
        remote_addr: str,
    ) -> SSORequest:
        """The SAML ACS (HTTP-POST binding)."""

        async def verify(request: SSORequest, connector: Resource) -> SSOIdentity:
            if not isinstance(connector, SAMLConnector):
                raise AccessDenied(f'connector "{connector_name}" is not a SAML connector')
            saml = SAMLProvider(connector, base_url)
            return saml.identity(saml_response, request.saml_request_id, request.redirect_uri)

        return await self._finish(connector_name, relay_state, binding, remote_addr, verify)

    async def _finish(
        self,
        connector_name: str,
        state: str,
        binding: str,
        remote_addr: str,
        verify: Callable[[SSORequest, Resource], Awaitable[SSOIdentity]],
    ) -> SSORequest:
        request: SSORequest | None = None
        identity: SSOIdentity | None = None
        try:
            request = await self._request_for_state(connector_name, state, binding)
            connector = await self.connector(request.connector, request.kind)
            identity = await verify(request, connector)
            certs, grant = await self._issue(connector, identity, request, remote_addr)
        except BastionError as exc:
            await self._audit_failure(connector_name, exc.message, remote_addr, identity)
            if request is not None and request.status == "started":
                request.status, request.error = "failed", exc.message
                try:
                    await self.requests.save(request)
                except BastionError:
                    pass  # the waiting bsh then times out; the failure is audited either way
            raise
        code = new_secret(24)
        request.status = "done"
        request.user = identity.user
        request.result = {**self._render(certs), "result_code": code}
        request.result_code_hash = hash_secret(code)
        await self.requests.save(request)
        await self.auth.audit.commit_change(
            "sso.login",
            [grant] if grant is not None else [],
            user=identity.user,
            remote_addr=remote_addr,
            method=identity.kind,
            connector=identity.connector,
            issuer=identity.issuer,
            subject=identity.subject,
            roles=list(certs.identity.roles),
        )
        return request

    async def _request_for_state(self, connector_name: str, state: str, binding: str) -> SSORequest:
        request_id = state.split(".", 1)[0] if "." in state else ""
        if not request_id:
            raise AccessDenied("state mismatch: the callback carries no state of a login")
        request = await self.requests.get(request_id)
        if not secrets_equal(request.state_hash, hash_secret(state)):
            raise AccessDenied("state mismatch: the callback's state is not this login's")
        if request.connector != connector_name:
            raise AccessDenied("state mismatch: the callback is for another connector")
        if not binding or not secrets_equal(request.binding_hash, hash_secret(binding)):
            raise AccessDenied(
                "this login was started in another browser (the login cookie is missing or "
                "different); start it again from the same browser"
            )
        if request.status != "started":
            raise AccessDenied("this login was already completed or failed (replayed callback)")
        return request

    async def _issue(
        self, connector: Resource, identity: SSOIdentity, request: SSORequest, remote_addr: str
    ) -> tuple[UserCerts, Put | None]:
        """The certificates, and the re-validation grant to store with the login event."""
        # A SCIM-provisioned user: its groups join the groups claim, its epoch is certified.
        scim = await ScimDirectory(self.auth).login_overlay(connector.name, identity.username)
        if scim is not None:
            groups = [*identity.claims.get(GROUPS_CLAIM, ()), *scim.groups]
            claims = {**identity.claims, GROUPS_CLAIM: list(dict.fromkeys(groups))}
            identity = dataclasses.replace(identity, claims=claims)
        role_names = require_roles(connector.name, connector_rules(connector), identity.claims)
        roles = []
        for name in role_names:
            try:
                roles.append(await self.auth.roles.get(name))
            except NotFound:
                raise AccessDenied(
                    f'connector "{connector.name}" maps your claims to role "{name}", which '
                    "does not exist; ask an admin to create it or fix the mapping"
                ) from None
        traits = claims_to_traits(identity)
        # An OIDC login of a user SCIM does not manage is re-checked at the IdP periodically.
        epoch = login_epoch(connector, identity.tokens) if scim is None else ""
        targets = LockTargets(user=identity.user, roles=tuple(role_names))
        (await self.auth.lock_decision(targets)).raise_if_denied()
        issued = self.auth.issuer.user_identity(
            cluster=self.auth.cluster,
            user=identity.user,
            roles=role_names,
            traits=traits,
            role_set=RoleSet.from_roles(roles, traits),
            requested_ttl=timedelta(seconds=request.ttl_seconds),
            pinned_ip=request.remote_addr,
            user_epoch=scim.epoch if scim is not None else epoch,
        )
        (await self.auth.lock_decision(identity_targets(issued))).raise_if_denied()
        certs = await issue_bound(
            self.auth,
            issued,
            request.public_key,
            request.remote_addr,
            binding_from_json(request.key_binding),
            second_factor=idp_second_factor(identity.claims),
        )
        expires = certs.identity.renew_until or certs.identity.expires
        now = self.auth.clock.now()
        return certs, grant_op(identity, epoch, list(role_names), expires, now)

    async def _audit_failure(
        self, connector: str, reason: str, remote_addr: str, identity: SSOIdentity | None
    ) -> None:
        fields: dict[str, Any] = {"connector": connector}
        if identity is not None:
            fields.update(issuer=identity.issuer, subject=identity.subject, method=identity.kind)
        await self.auth.audit.emit(
            "sso.login",
            outcome="failure",
            user=identity.user if identity else "",
            remote_addr=remote_addr,
            reason=reason,
            **fields,
        )

    async def fail_request(self, connector: str, reason: str, remote_addr: str) -> None:
        """Audit a refusal that happened before a request was identified (bad start, junk)."""
        await self._audit_failure(connector, reason, remote_addr, None)

    # ---- 4. bsh fetches the result -------------------------------------------------------------

    async def take_result(
        self, request_id: str, secret: str, code: str, wait: float, remote_addr: str = ""
    ) -> dict[str, Any]:
        """The certificates, once; waits up to ``wait`` seconds for the browser to finish.

        Returns:
            The certificate document, or ``{"status": ...}`` while the login is not finished
            (``done`` without a code: waiting for the browser to reach bsh's callback).

        Raises:
            AccessDenied: wrong secret or code (audited: someone else is fetching), failed login
            (with its reason), already taken.
        """
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        while True:
            request = await self.requests.get(request_id)
            if not secrets_equal(request.secret_hash, hash_secret(secret)):
                await self._audit_failure(
                    request.connector, "result fetched with a wrong secret", remote_addr, None
                )
                raise AccessDenied("wrong secret for this login request")
            if request.status == "failed":
                raise AccessDenied(f"SSO login failed: {request.error}")
            if request.status == "done" and request.result is not None:
                if not request.headless and not code:
                    return {"status": "done"}  # bsh waits for the browser to bring the code
                if not request.headless and not secrets_equal(
                    request.result_code_hash, hash_secret(code)
                ):
                    await self._audit_failure(
                        request.connector, "result fetched with a wrong code", remote_addr, None
                    )
                    raise AccessDenied("wrong one-time code from the browser")
                await self.requests.delete(request)
                result = dict(request.result)
                result.pop("result_code", None)
                return result
            if time.monotonic() >= deadline:
                return {"status": request.status}
            await asyncio.sleep(POLL_INTERVAL)

    def client_redirect_url(self, request: SSORequest) -> str:
        """Where the browser goes after a successful login (bsh's localhost callback)."""
        assert request.result is not None
        sep = "&" if "?" in request.client_redirect else "?"
        query = urlencode({"request": request.id, "code": request.result["result_code"]})
        return f"{request.client_redirect}{sep}{query}"
