"""The account page (``/web/account``): the signed-in user's MFA devices and passkeys, and the
password.

Layer: web (IO shell). Every change goes through the services ``bsh`` uses, with the same
proofs and audit:

* **List**: :meth:`MFAService.list_devices` (``bsh mfa ls``), shown by kind and name.
* **Add** a security key or passkey: the WebAuthn registration ceremony of ``/web/mfa``
  (``static/webauthn.js`` ``register``; a fresh second-factor proof first, as there).
* **Remove**: a proof from one of the user's devices bound to ``mfa:remove:<name>`` (a
  security key touch, or a TOTP code), :meth:`MFAService.confirm_with_existing`, then
  :meth:`MFAService.remove_device`: exactly ``bsh mfa rm`` (``POST /v1/mfa/devices/NAME/remove``).
* **Password**: the current password and a second factor (scope ``password:change``),
  :meth:`UserService.change_password`; the policy's one-line errors are shown in the form.

``POST /web/account/challenge`` (JSON, ``X-CSRF-Token``) gives ``static/account.js`` the
WebAuthn options for one of those two scopes. SSO users have no local password or devices
(their identity provider does that): the page says so and offers no form.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from bastion.errors import AuthenticationFailed, BadParameter, BastionError
from bastion.mfa.policy import webauthn_enabled
from bastion.mfa.service import usable_webauthn
from bastion.types.mfa import MFADevice
from bastion.web.admin_common import PageContext, Shell, esc, guarded_page, hidden_csrf, notice
from bastion.web.body import read_json
from bastion.web.pages import WEBAUTHN_SCRIPTS
from bastion.web.security import check_csrf, security_headers
from bastion.web.sessions import current_session

__all__ = ["PASSWORD_SCOPE", "AccountPages", "add_account_routes", "device_rows", "scope_for"]

PASSWORD_SCOPE = "password:change"
ACCOUNT_SCRIPTS = (
    *(f"/web/static/{name}" for name in WEBAUTHN_SCRIPTS),
    "/web/static/account.js",
)
_ASSERTION = "mfa_assertion"
_SSO = (
    "You signed in with single sign-on: your identity provider manages your password and "
    "second factor."
)


def scope_for(scope: str, devices: Sequence[MFADevice]) -> str:
    """The challenge scope a page may ask for: the password change, or removing one of the
    user's own devices (by name).

    Raises:
        BadParameter: any other scope.
    """
    if scope == PASSWORD_SCOPE:
        return scope
    name = scope.removeprefix("mfa:remove:")
    if scope.startswith("mfa:remove:") and any(d.name == name for d in devices):
        return scope
    raise BadParameter("scope must be password:change or mfa:remove:<one of your devices>")


def _when(device: MFADevice) -> tuple[str, str]:
    added = "-" if device.added.year <= 1970 else f"{device.added:%Y-%m-%d %H:%M} UTC"
    used = f"{device.last_used:%Y-%m-%d %H:%M} UTC" if device.last_used else "never"
    return added, used


def device_rows(ctx: PageContext, devices: Sequence[MFADevice]) -> str:
    """The devices table: kind and name (never an id alone), dates, a remove form each."""
    if not devices:
        return '<p class="empty">No MFA devices yet: add a security key below.</p>'
    rows = []
    for device in sorted(devices, key=lambda d: (d.kind, d.name)):
        added, used = _when(device)
        remove = (
            '<form method="post" action="/web/account/devices/remove" class="inline" '
            f'data-account-mfa data-scope="{esc("mfa:remove:" + device.name)}" '
            f'data-confirm="Remove {esc(device.describe())}?">{hidden_csrf(ctx)}'
            f'<input type="hidden" name="name" value="{esc(device.name)}">'
            f'<input name="otp" autocomplete="one-time-code" inputmode="numeric" size="8" '
            f'placeholder="TOTP code" aria-label="TOTP code to remove {esc(device.name)} '
            '(or leave empty and touch your security key)">'
            f'<button type="submit" aria-label="Remove {esc(device.describe())}">Remove</button>'
            "</form>"
        )
        rows.append(
            f'<tr data-device="{esc(device.name)}"><td>{esc(device.kind)}</td>'
            f'<th scope="row">{esc(device.name)}</th><td>{esc(added)}</td><td>{esc(used)}</td>'
            f"<td>{remove}</td></tr>"
        )
    return (
        '<table class="nodes" id="devices"><thead><tr><th scope="col">Kind</th>'
        '<th scope="col">Name</th><th scope="col">Added</th><th scope="col">Last used</th>'
        '<th scope="col">Remove</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
    )


def password_form(ctx: PageContext, error: str = "", done: str = "") -> str:
    top = notice(error, error=True) if error else (notice(done) if done else "")
    return (
        '<form method="post" action="/web/account/password" class="card" id="password-form" '
        f'data-account-mfa data-scope="{PASSWORD_SCOPE}" aria-label="Change the password">'
        f"{top}{hidden_csrf(ctx)}"
        '<label>Current password <input type="password" name="current" id="pw-current" '
        'autocomplete="current-password" required></label>'
        '<label>New password <input type="password" name="new" id="pw-new" '
        'autocomplete="new-password" required></label>'
        '<label>New password again <input type="password" name="confirm" id="pw-confirm" '
        'autocomplete="new-password" required></label>'
        '<label>TOTP code <input name="otp" id="pw-otp" autocomplete="one-time-code" '
        'inputmode="numeric" placeholder="or leave empty and touch your key"></label>'
        '<button type="submit">Change password</button></form>'
    )


class AccountPages:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.auth = shell.auth

    async def _render(
        self,
        ctx: PageContext,
        top: str = "",
        status: int = 200,
        pw_error: str = "",
        pw_done: str = "",
    ) -> web.Response:
        intro = (
            f"<p>Signed in as <strong>{esc(ctx.user)}</strong> "
            '(<a href="/web/">session and sign-out</a>).</p>'
        )
        if ctx.session.method.startswith("sso:"):
            return ctx.page("Account", intro + notice(_SSO), status=status)
        devices = await self.auth.mfa.list_devices(ctx.user)
        add = (
            '<section class="card" aria-label="Add a security key or passkey">'
            '<label>Name of the new key <input id="device-name" value="browser-key" required>'
            '</label><label><input id="device-passkey" type="checkbox"> Passkey: sign in with '
            "it alone (no password)</label>"
            '<button type="button" data-ceremony="register" data-endpoint="/web/mfa/register" '
            "data-reload>Add a security key</button>"
            '<p class="hint">Once you have a device, adding another needs a fresh confirmation '
            "(signing in, or Verify) within 5 minutes.</p>"
            '<button type="button" data-ceremony="verify" data-endpoint="/web/mfa/verify">'
            "Verify with your security key</button></section>"
        )
        body = (
            intro
            + top
            + '<p id="webauthn-status" class="ok" role="status"></p>'
            + "<h2>MFA devices and passkeys</h2>"
            + device_rows(ctx, devices)
            + "<h2>Add a security key or passkey</h2>"
            + add
            + "<h2>Password</h2>"
            + password_form(ctx, pw_error, pw_done)
        )
        return ctx.page("Account", body, status=status, scripts=ACCOUNT_SCRIPTS)

    async def show(self, ctx: PageContext) -> web.StreamResponse:
        return await self._render(ctx)

    async def remove(self, ctx: PageContext) -> web.StreamResponse:
        form = await ctx.form()
        user, remote = ctx.user, ctx.remote
        name = form.get("name", "")
        mfa = self.auth.mfa
        try:
            # What POST /v1/mfa/devices/NAME/remove does for bsh mfa rm (api/mfa.py).
            await mfa.confirm_change(
                user, f"mfa:remove:{name}", _assertion(form), form.get("otp", "").strip(), remote
            )
            await mfa.remove_device(user, name, user, remote)
        except BastionError as exc:
            return await self._render(ctx, notice(exc.message, error=True), exc.http_status)
        return await self._render(ctx, notice(f"Removed {name}."))

    async def password(self, ctx: PageContext) -> web.StreamResponse:
        form = await ctx.form()
        if ctx.session.method.startswith("sso:"):
            return await self._render(ctx, status=400)
        try:
            if form.get("new", "") != form.get("confirm", ""):
                raise BadParameter("the two new passwords differ")
            await self.shell.users.change_password(
                ctx.user,
                form.get("current", ""),
                form.get("new", ""),
                ctx.remote,
                webauthn=_assertion(form),
                otp=form.get("otp", "").strip(),
            )
        except BastionError as exc:
            status = 401 if isinstance(exc, AuthenticationFailed) else exc.http_status
            return await self._render(ctx, status=status, pw_error=exc.message)
        return await self._render(ctx, pw_done="Password changed.")

    async def challenge(self, request: web.Request) -> web.Response:
        """``{"required": false}`` or ``{"required": true, "options": ...}`` for the scope."""
        check_csrf(request, request.headers.get("X-CSRF-Token", ""))
        body = await read_json(request)
        session = current_session(request)
        if session is None:
            raise AuthenticationFailed("sign in first (/web/login)")
        devices = await self.auth.mfa.list_devices(session.user)
        scope = scope_for(str(body.get("scope", "")), devices)
        pref = await self.auth.auth_preference()
        reply: dict[str, Any] = {"required": False}
        if webauthn_enabled(pref.spec.second_factor) and usable_webauthn(devices):
            options = await self.auth.mfa.begin_challenge(session.user, scope)
            reply = {"required": True, "options": options}
        response = web.json_response(reply)
        security_headers(response)
        return response


def _assertion(form: dict[str, str]) -> dict[str, Any] | None:
    raw = form.get(_ASSERTION, "")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadParameter("the security key's answer is not a credential") from None
    if not isinstance(value, dict):
        raise BadParameter("the security key's answer is not a credential")
    return value


def add_account_routes(app: web.Application, shell: Shell) -> None:
    pages = AccountPages(shell)
    r = app.router
    r.add_get("/web/account", guarded_page(shell, pages.show))
    r.add_post("/web/account/devices/remove", guarded_page(shell, pages.remove))
    r.add_post("/web/account/password", guarded_page(shell, pages.password))
    r.add_post("/web/account/challenge", pages.challenge)
