"""User logins through the real HTTP API on loopback (aiohttp TestServer): the unit layer opens no
sockets, so the end-to-end lockout answers are checked here."""

from datetime import timedelta

import pyotp

from bastion.testing import make_auth, new_public_key

PASSWORD = "correct horse battery staple"


async def invited(fx, name="alice", roles=("access",), logins=("alice", "root")):
    invite = await fx.users.add_user(name, list(roles), list(logins), {}, "admin")
    info = await fx.users.start_invite(invite.token)
    return invite, info


async def enrol(fx, name="alice", **kw):
    invite, info = await invited(fx, name, **kw)
    code = pyotp.TOTP(info.otp_secret).at(fx.clock.now())
    _, pub = new_public_key()
    certs = await fx.users.complete_invite(
        invite.token, PASSWORD, code, pub, timedelta(hours=1), "10.0.0.1"
    )
    fx.clock.advance(60)  # next TOTP step
    return info.otp_secret, certs


async def test_real_and_unknown_names_get_byte_identical_answers_through_ten_failures():
    """Issue 11: the lockout used to be checked (for real users only) before the password, so
    after 5 failures a real name got '403 ... locked until' and an unknown one kept '401'."""
    from aiohttp.test_utils import TestClient, TestServer

    from bastion.api.app import build_app
    from bastion.audit.log import AuditQuery

    fx = await make_auth()
    await enrol(fx)
    _, pub = new_public_key()
    app = build_app(fx.auth, rate=1000.0, burst=1000, max_body=1 << 20)
    answers: dict[str, list[tuple[int, bytes]]] = {"alice": [], "nobody": []}
    async with TestClient(TestServer(app)) as client:
        for _ in range(10):
            for name in answers:
                body = {"user": name, "password": "wrong password!!", "public_key": pub}
                resp = await client.post("/v1/login", json=body)
                answers[name].append((resp.status, await resp.read()))
    assert answers["alice"] == answers["nobody"]
    statuses = [status for status, _ in answers["alice"]]
    assert statuses == [401] * 5 + [403] * 5  # both names are locked out after five
    outs = await fx.auth.audit.search(AuditQuery(types=("user.locked_out",)))
    assert {(e.user, e.fields.get("known_user", True)) for e in outs} == {
        ("alice", True),
        ("nobody", False),
    }  # the log tells the truth
    fx.clock.advance(timedelta(minutes=31))
    secret = (await fx.auth.credentials.get("alice")).totp_secret
    code = pyotp.TOTP(secret).at(fx.clock.now())
    certs = await fx.users.login("alice", PASSWORD, code, pub, timedelta(1), "ip")
    assert certs.identity.user == "alice"  # the lockout ends on its own
