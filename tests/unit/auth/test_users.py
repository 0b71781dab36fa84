from datetime import timedelta

import pyotp
import pytest

from bastion.errors import AccessDenied, AuthenticationFailed, BadParameter
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


async def test_invite_sets_password_and_totp_and_issues_certs():
    fx = await make_auth()
    secret, certs = await enrol(fx)
    assert certs.identity.user == "alice"
    assert set(certs.identity.logins) == {"alice", "root"}
    assert certs.ssh_cert.startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert "BEGIN CERTIFICATE" in certs.tls_cert
    assert certs.identity.expires == fx.clock.now() - timedelta(seconds=60) + timedelta(hours=1)


async def test_invite_is_single_use():
    fx = await make_auth()
    invite, info = await invited(fx)
    _, pub = new_public_key()
    code = pyotp.TOTP(info.otp_secret).at(fx.clock.now())
    await fx.users.complete_invite(invite.token, PASSWORD, code, pub, timedelta(hours=1), "ip")
    with pytest.raises(AccessDenied, match="invalid, expired or already used"):
        await fx.users.start_invite(invite.token)


async def test_invite_expires():
    fx = await make_auth()
    invite, _ = await invited(fx)
    fx.clock.advance(timedelta(hours=25))
    with pytest.raises(AccessDenied):
        await fx.users.start_invite(invite.token)


async def test_invite_wrong_totp_changes_nothing():
    fx = await make_auth()
    invite, info = await invited(fx)
    _, pub = new_public_key()
    with pytest.raises(AuthenticationFailed, match="TOTP"):
        await fx.users.complete_invite(invite.token, PASSWORD, "000000", pub, timedelta(1), "ip")
    assert (await fx.auth.credentials.get("alice")).password_hash == ""
    assert (await fx.users.start_invite(invite.token)).user == "alice"  # still usable


async def test_short_password_refused():
    fx = await make_auth()
    invite, info = await invited(fx)
    _, pub = new_public_key()
    code = pyotp.TOTP(info.otp_secret).at(fx.clock.now())
    with pytest.raises(BadParameter, match="password too short"):
        await fx.users.complete_invite(invite.token, "short", code, pub, timedelta(1), "ip")


async def test_login_with_password_and_totp():
    fx = await make_auth()
    secret, _ = await enrol(fx)
    _, pub = new_public_key()
    code = pyotp.TOTP(secret).at(fx.clock.now())
    certs = await fx.users.login("alice", PASSWORD, code, pub, timedelta(hours=2), "10.0.0.2")
    assert certs.identity.roles == ("access",)
    # the same code again is a replay
    with pytest.raises(AuthenticationFailed):
        await fx.users.login("alice", PASSWORD, code, pub, timedelta(hours=2), "10.0.0.2")


@pytest.mark.parametrize(
    ("user", "password", "otp"),
    [
        ("alice", "wrong password!!", None),
        ("alice", PASSWORD, "123456"),
        ("nobody", PASSWORD, None),
    ],
)
async def test_login_failures_are_generic_and_audited(user, password, otp):
    fx = await make_auth()
    secret, _ = await enrol(fx)
    _, pub = new_public_key()
    code = otp or pyotp.TOTP(secret).at(fx.clock.now())
    with pytest.raises(AuthenticationFailed, match="invalid username, password or second factor"):
        await fx.users.login(user, password, code, pub, timedelta(hours=1), "10.9.9.9")
    events = await fx.auth.audit.search(
        __import__("bastion.audit.log", fromlist=["AuditQuery"]).AuditQuery(types=("user.login",))
    )
    failure = events[-1]
    assert failure.outcome == "failure" and failure.user == user
    assert failure.remote_addr == "10.9.9.9" and failure.reason


async def test_lockout_after_five_failures_then_reset_unlocks():
    fx = await make_auth()
    secret, _ = await enrol(fx)
    _, pub = new_public_key()
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            await fx.users.login("alice", "wrong password!!", "", pub, timedelta(1), "ip")
    code = pyotp.TOTP(secret).at(fx.clock.now())
    with pytest.raises(AccessDenied, match="locked until"):
        await fx.users.login("alice", PASSWORD, code, pub, timedelta(1), "ip")
    fx.clock.advance(timedelta(minutes=31))
    code = pyotp.TOTP(secret).at(fx.clock.now())
    certs = await fx.users.login("alice", PASSWORD, code, pub, timedelta(1), "ip")
    assert certs.identity.user == "alice"


async def test_failures_outside_window_do_not_lock():
    fx = await make_auth()
    secret, _ = await enrol(fx)
    _, pub = new_public_key()
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            await fx.users.login("alice", "wrong password!!", "", pub, timedelta(1), "ip")
    fx.clock.advance(timedelta(minutes=31))
    with pytest.raises(AuthenticationFailed):
        await fx.users.login("alice", "wrong password!!", "", pub, timedelta(1), "ip")
    code = pyotp.TOTP(secret).at(fx.clock.now())
    assert (await fx.users.login("alice", PASSWORD, code, pub, timedelta(1), "ip")).identity


async def test_reset_forgets_credentials():
    fx = await make_auth()
    await enrol(fx)
    invite = await fx.users.reset_user("alice", "admin")
    assert (await fx.auth.credentials.get("alice")).password_hash == ""
    assert (await fx.users.start_invite(invite.token)).user == "alice"


async def test_add_user_with_unknown_role_is_refused_and_creates_nothing():
    fx = await make_auth()
    with pytest.raises(BadParameter, match="unknown role"):
        await fx.users.add_user("bob", ["nope"], [], {}, "admin")
    assert [u.name for u in await fx.auth.users.list()] == []


async def test_add_user_with_a_bad_name_is_one_clear_line():
    fx = await make_auth()
    with pytest.raises(BadParameter) as info:
        await fx.users.add_user("bad name", ["access"], [], {}, "admin")
    message = info.value.message
    assert message.startswith('user "bad name": name: invalid name')
    assert "\n" not in message and "pydantic" not in message and "validation error" not in message


async def test_ttl_is_capped_by_role():
    fx = await make_auth()
    role = await fx.auth.roles.get("access")
    role.spec.options.max_session_ttl = timedelta(hours=1)
    await fx.auth.roles.update(role)
    secret, _ = await enrol(fx)
    _, pub = new_public_key()
    code = pyotp.TOTP(secret).at(fx.clock.now())
    certs = await fx.users.login("alice", PASSWORD, code, pub, timedelta(hours=30), "ip")
    assert certs.identity.expires - fx.clock.now() == timedelta(hours=1)


# ---- WebAuthn -----------------------------------------------------------------------------------

WA_ORIGIN = "https://127.0.0.1:3025"


async def _allow_software(fx):
    pref = await fx.auth.auth_preference()
    pref.spec.allow_software_authenticator = True
    await fx.auth.prefs.update(pref)


async def enrol_key(fx, name="alice", discoverable=False):
    from bastion.mfa.softkey import SoftwareAuthenticator

    await _allow_software(fx)
    invite, _ = await invited(fx, name)
    key = SoftwareAuthenticator()
    options = await fx.users.invite_webauthn_options(invite.token)
    assert options["authenticatorSelection"]["residentKey"] == "discouraged"
    if discoverable:  # an authenticator that makes a discoverable credential anyway
        options["authenticatorSelection"]["residentKey"] = "required"
    _, pub = new_public_key()
    certs = await fx.users.complete_invite(
        invite.token,
        PASSWORD,
        "",
        pub,
        timedelta(hours=1),
        "ip",
        webauthn=key.create(options, WA_ORIGIN),
        device_name="yubi",
    )
    return key, certs


async def test_invite_with_a_key_then_password_plus_key():
    fx = await make_auth()
    key, certs = await enrol_key(fx)
    [device] = await fx.auth.mfa.list_devices("alice")
    assert certs.identity.mfa_device == device.id and device.name == "yubi"
    assert (await fx.auth.credentials.get("alice")).totp_secret == ""  # the key, not TOTP
    challenge = await fx.users.begin_login("alice", PASSWORD, "ip")
    assert challenge.webauthn is not None and challenge.totp is False
    _, pub = new_public_key()
    certs = await fx.users.login(
        "alice",
        PASSWORD,
        "",
        pub,
        timedelta(hours=1),
        "ip",
        webauthn=key.get(challenge.webauthn, WA_ORIGIN),
    )
    assert certs.identity.mfa_device == device.id
    from bastion.audit.log import AuditQuery

    logins = await fx.auth.audit.search(AuditQuery(types=("user.login",)))
    assert logins[-1].fields["method"] == "password+webauthn"
    assert logins[-1].fields["aaguid"] == device.aaguid


async def test_key_user_without_assertion_is_told_to_use_the_key():
    fx = await make_auth()
    await enrol_key(fx)
    _, pub = new_public_key()
    with pytest.raises(AuthenticationFailed, match="security key"):
        await fx.users.login("alice", PASSWORD, "123456", pub, timedelta(hours=1), "ip")


async def test_wrong_password_gets_no_challenge():
    fx = await make_auth()
    await enrol_key(fx)
    with pytest.raises(AuthenticationFailed):
        await fx.users.begin_login("alice", "wrong password!!", "ip")


async def test_failed_assertion_is_audited_with_reason_and_counts():
    fx = await make_auth()
    key, _ = await enrol_key(fx)
    challenge = await fx.users.begin_login("alice", PASSWORD, "ip")
    response = key.get(challenge.webauthn, "https://evil.test")
    _, pub = new_public_key()
    with pytest.raises(AccessDenied, match="wrong origin"):
        await fx.users.login(
            "alice", PASSWORD, "", pub, timedelta(hours=1), "ip", webauthn=response
        )
    from bastion.audit.log import AuditQuery

    [failed] = await fx.auth.audit.search(AuditQuery(types=("user.login",), outcome="failure"))
    assert failed.fields["method"] == "password+webauthn" and "origin" in failed.reason


async def add_passkey(fx, name="alice"):
    from bastion.mfa.softkey import SoftwareAuthenticator

    passkey = SoftwareAuthenticator()
    options = await fx.auth.mfa.begin_registration(name, passwordless=True)
    device = await fx.auth.mfa.finish_registration(
        name, "passkey", passkey.create(options, WA_ORIGIN)
    )
    return passkey, device


async def test_second_factor_key_cannot_log_in_alone():
    from bastion.audit.log import AuditQuery

    fx = await make_auth()
    key, _ = await enrol_key(fx, discoverable=True)  # registered at the invite: a 2nd factor
    [device] = await fx.auth.mfa.list_devices("alice")
    options = await fx.auth.mfa.begin_challenge(None, "login")
    _, pub = new_public_key()
    with pytest.raises(AccessDenied, match="registered as a second factor"):
        await fx.users.login_passwordless(
            key.get(options, WA_ORIGIN), pub, timedelta(hours=1), "10.0.0.9"
        )
    [failed] = await fx.auth.audit.search(AuditQuery(types=("user.login",), outcome="failure"))
    assert (failed.user, failed.remote_addr) == ("alice", "10.0.0.9")
    assert failed.fields["method"] == "passwordless"
    assert failed.fields["mfa_device"] == device.id
    assert "second-factor" in failed.reason
    # not a guessing attempt: it does not count towards the lockout
    assert (await fx.auth.users.get("alice")).spec.status.locked_until is None
    # the same key with the password still works
    challenge = await fx.users.begin_login("alice", PASSWORD, "ip")
    certs = await fx.users.login(
        "alice",
        PASSWORD,
        "",
        pub,
        timedelta(hours=1),
        "ip",
        webauthn=key.get(challenge.webauthn, WA_ORIGIN),
    )
    assert certs.identity.mfa_device == device.id


async def test_passwordless_login_and_lockout_still_applies():
    fx = await make_auth()
    await enrol_key(fx)
    key, passkey = await add_passkey(fx)
    options = await fx.auth.mfa.begin_challenge(None, "login")
    _, pub = new_public_key()
    certs = await fx.users.login_passwordless(
        key.get(options, WA_ORIGIN), pub, timedelta(hours=1), "ip"
    )
    assert certs.identity.user == "alice" and certs.identity.mfa_device == passkey.id
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            await fx.users.login("alice", "wrong password!!", "", pub, timedelta(hours=1), "ip")
    options = await fx.auth.mfa.begin_challenge(None, "login")
    with pytest.raises(AccessDenied, match="locked"):
        await fx.users.login_passwordless(
            key.get(options, WA_ORIGIN), pub, timedelta(hours=1), "ip"
        )


async def test_reset_forgets_keys():
    fx = await make_auth()
    await enrol_key(fx)
    await fx.users.reset_user("alice", "admin")
    assert await fx.auth.mfa.list_devices("alice") == []


async def test_lock_on_the_mfa_device_refuses_logins_with_it():
    from bastion.errors import BastionError
    from bastion.types.access import Lock, LockSpec, LockTarget
    from bastion.types.meta import Metadata

    fx = await make_auth()
    key, certs = await enrol_key(fx)
    lock = Lock(
        metadata=Metadata(name="lost-key"),
        spec=LockSpec(target=LockTarget(mfa_device=certs.identity.mfa_device), message="lost"),
    )
    await fx.auth.create_resource(lock, "admin", force=False)
    challenge = await fx.users.begin_login("alice", PASSWORD, "ip")
    _, pub = new_public_key()
    with pytest.raises(BastionError, match="lost"):
        await fx.users.login(
            "alice",
            PASSWORD,
            "",
            pub,
            timedelta(hours=1),
            "ip",
            webauthn=key.get(challenge.webauthn, WA_ORIGIN),
        )


async def test_reset_deletion_and_narrowing_replace_the_epoch_and_lock_the_old_one():
    from bastion.errors import NotFound

    fx = await make_auth()
    auth = fx.auth

    async def epoch(name):
        return (await auth.users.get(name)).spec.epoch

    async def revocations():
        return {
            (lk.spec.target.user, lk.spec.target.user_epoch)
            for lk in await auth.locks.list()
            if lk.name.startswith("revoked-")
        }

    await enrol(fx)
    first = await epoch("alice")
    assert len(first) == 32
    await fx.users.reset_user("alice", "admin")
    second = await epoch("alice")
    assert second != first and ("alice", first) in await revocations()

    user = await auth.users.get("alice")  # widening keeps the epoch
    user.spec.roles = [*user.spec.roles, "editor"]
    await auth.update_resource(user, "admin")
    assert await epoch("alice") == second
    user = await auth.users.get("alice")  # narrowing replaces it
    user.spec.roles = ["access"]
    user.spec.epoch = "chosen-by-the-client"  # never taken from the request
    await auth.update_resource(user, "admin")
    third = await epoch("alice")
    assert third not in (second, "chosen-by-the-client")
    assert ("alice", second) in await revocations()

    invite = await fx.users.add_user("bob", ["access"], ["bob"], {}, "admin")
    bob_epoch = await epoch("bob")
    await auth.delete_resource("user", "bob", "admin")
    assert ("bob", bob_epoch) in await revocations()
    await fx.users.add_user("bob", ["access"], ["bob"], {}, "admin")  # someone else
    assert await epoch("bob") != bob_epoch
    with pytest.raises((NotFound, AccessDenied, AuthenticationFailed)):
        await fx.users.start_invite(invite.token)  # the old person's invite died with it


async def test_sign_up_states_pending_then_active_or_expired():
    fx = await make_auth()
    invite, _ = await invited(fx, "pend")
    await enrol(fx, "done")
    await invited(fx, "late")
    states = await fx.users.sign_up_states(["pend", "done", "late"])
    assert states["pend"] == ("pending", invite.expires)
    assert "done" not in states  # signed up: active
    fx.clock.advance(timedelta(hours=25))
    states = await fx.users.sign_up_states(["pend", "done", "late"])
    assert states == {"pend": ("expired", None), "late": ("expired", None)}
    again = await fx.users.reset_user("late", "admin")  # a fresh invite: pending again
    assert (await fx.users.sign_up_states(["late"]))["late"] == ("pending", again.expires)


async def test_invite_state_tells_valid_used_expired_withdrawn_and_unknown():
    fx = await make_auth()
    invite, _ = await invited(fx, "ann")
    assert await fx.users.invite_state(invite.token) == "valid"
    assert await fx.users.invite_state("never-an-invite") == "unknown"
    used, _ = await invited(fx, "bob")
    secret = (await fx.users.start_invite(used.token)).otp_secret
    _, pub = new_public_key()
    await fx.users.complete_invite(
        used.token, PASSWORD, pyotp.TOTP(secret).at(fx.clock.now()), pub, timedelta(hours=1), ""
    )
    assert await fx.users.invite_state(used.token) == "used"
    withdrawn, _ = await invited(fx, "cy")
    await fx.users.reset_user("cy", "admin")  # a new invite replaces the old one
    assert await fx.users.invite_state(withdrawn.token) == "revoked"
    pref = await fx.auth.auth_preference()
    fx.clock.advance(pref.spec.invite_ttl.total_seconds() + 1)
    assert await fx.users.invite_state(invite.token) == "expired"
    with pytest.raises(AccessDenied):  # and it still cannot be used
        await fx.users.start_invite(invite.token)


# ---- the device proof inside the login request (issue 13) -------------------------------------


async def _device_world():
    """alice signed up (password + TOTP) and her machine enrolled with a software key."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from bastion.auth.device_attest import enroll_message
    from bastion.auth.devices import DeviceService

    fx = await make_auth()
    pref = await fx.auth.auth_preference()
    pref.spec.device_trust.allow_software = True
    await fx.auth.prefs.update(pref)
    secret, _ = await enrol(fx)
    devices = DeviceService(fx.auth)
    device = await devices.add("SN-1", "linux", "alice", "admin")
    token = (await devices.create_enroll_token(device.name, None, "admin")).token
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    begin = await devices.enroll_begin("alice", token, "software", "", "", "", pem.decode(), {}, "")
    message = enroll_message("test.local", begin.session, base64.b64decode(begin.nonce))
    await devices.enroll_finish("alice", begin.session, "", _device_sign(key, message), "")
    return fx, secret, device.name, key


def _device_sign(key, message: bytes) -> str:
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(key.sign(message, ec.ECDSA(hashes.SHA256()))).decode()


def _proof(fx, device_id, key, profile=None):
    from bastion.auth.device_attest import authn_message
    from bastion.auth.device_challenge import challenge_key, mint_challenge
    from bastion.auth.devices import LoginProof

    challenge = mint_challenge(challenge_key(b"\x01" * 32), "", fx.clock.now())  # the ping's
    full = {k: "" for k in ("os_name", "os_version", "kernel", "model", "serial", "hostname")}
    full |= {"bsh_version": ""} | (profile or {})
    signature = _device_sign(key, authn_message("test.local", challenge, b"", full))
    return LoginProof(device_id, challenge, signature, profile or {})


async def _cert_events(fx):
    from bastion.audit.log import AuditQuery

    return await fx.auth.audit.search(AuditQuery(types=("cert.issued",)))


async def test_login_with_a_device_proof_issues_once_with_the_device():
    fx, secret, device_id, key = await _device_world()
    before = len(await _cert_events(fx))
    proof = _proof(fx, device_id, key, {"hostname": "laptop"})
    _, pub = new_public_key()
    code = pyotp.TOTP(secret).at(fx.clock.now())
    certs = await fx.users.login(
        "alice", PASSWORD, code, pub, timedelta(hours=1), "ip", device=proof
    )
    assert not certs.device_error
    ident = certs.identity
    assert (ident.device_id, ident.device_asset_tag, ident.device_attestation) == (
        device_id,
        "SN-1",
        "software",
    )
    assert ident.device_credential_id
    issued = await _cert_events(fx)
    assert len(issued) == before + 1  # one issuance carries the device
    assert issued[-1].device_id == device_id
    from bastion.auth.devices import DeviceService

    stored = await DeviceService(fx.auth).get(device_id)
    assert stored.spec.profile.hostname == "laptop" and stored.spec.last_seen == fx.clock.now()


async def test_a_refused_device_proof_leaves_the_login_standing():
    from bastion.audit.log import AuditQuery

    fx, secret, device_id, key = await _device_world()
    proof = _proof(fx, device_id, key)
    _, pub = new_public_key()
    code = pyotp.TOTP(secret).at(fx.clock.now())
    first = await fx.users.login(
        "alice", PASSWORD, code, pub, timedelta(hours=1), "ip", device=proof
    )
    assert first.identity.device_id == device_id
    fx.clock.advance(30)  # next TOTP step, the challenge still fresh
    code = pyotp.TOTP(secret).at(fx.clock.now())
    before = len(await _cert_events(fx))
    again = await fx.users.login(
        "alice", PASSWORD, code, pub, timedelta(hours=1), "ip", device=proof
    )
    assert "already used" in again.device_error  # a replayed proof: no device, login stands
    assert again.identity.device_id == "" and again.tls_cert
    assert len(await _cert_events(fx)) == before + 1
    other = _proof(fx, device_id, key)
    forged = other.__class__(device_id, other.challenge, _device_sign(key, b"other"), {})
    fx.clock.advance(30)
    code = pyotp.TOTP(secret).at(fx.clock.now())
    bad = await fx.users.login(
        "alice", PASSWORD, code, pub, timedelta(hours=1), "ip", device=forged
    )
    assert "does not verify" in bad.device_error and not bad.identity.device_id
    failures = await fx.auth.audit.search(AuditQuery(types=("device.authn",), outcome="failure"))
    assert len(failures) == 2


async def test_a_device_proof_is_not_looked_at_when_the_password_fails():
    from bastion.audit.log import AuditQuery

    fx, secret, device_id, key = await _device_world()
    proof = _proof(fx, device_id, key)
    _, pub = new_public_key()
    with pytest.raises(AuthenticationFailed):
        await fx.users.login("alice", "wrong password!!", "", pub, timedelta(1), "ip", device=proof)
    assert not await fx.auth.audit.search(AuditQuery(types=("device.authn",)))
    code = pyotp.TOTP(secret).at(fx.clock.now())  # the proof was not spent
    certs = await fx.users.login(
        "alice", PASSWORD, code, pub, timedelta(hours=1), "ip", device=proof
    )
    assert certs.identity.device_id == device_id


async def test_a_locked_device_is_refused_but_the_login_stands():
    from bastion.types.access import Lock, LockSpec, LockTarget
    from bastion.types.meta import Metadata

    fx, secret, device_id, key = await _device_world()
    lock = Lock(
        metadata=Metadata(name="lost-laptop"),
        spec=LockSpec(target=LockTarget(device=device_id), message="reported lost"),
    )
    await fx.auth.create_resource(lock, "admin", force=False)
    _, pub = new_public_key()
    code = pyotp.TOTP(secret).at(fx.clock.now())
    certs = await fx.users.login(
        "alice", PASSWORD, code, pub, timedelta(hours=1), "ip", device=_proof(fx, device_id, key)
    )
    assert certs.device_error and not certs.identity.device_id


async def test_a_role_requiring_a_hardware_key_refuses_a_login_with_a_software_key():
    from bastion.audit.log import AuditQuery
    from bastion.types.access import Role, RoleOptions, RoleSpec
    from bastion.types.meta import Metadata

    fx, secret, device_id, key = await _device_world()
    strict = Role(
        metadata=Metadata(name="hw"), spec=RoleSpec(options=RoleOptions(require_hardware_key=True))
    )
    await fx.auth.create_resource(strict, "admin", force=False)
    user = await fx.auth.users.get("alice")
    user.spec.roles = [*user.spec.roles, "hw"]
    await fx.auth.users.update(user)
    _, pub = new_public_key()
    code = pyotp.TOTP(secret).at(fx.clock.now())
    with pytest.raises(AccessDenied, match=r"require_hardware_key"):
        await fx.users.login(  # a software-attested device vouches for no key
            "alice", PASSWORD, code, pub, timedelta(1), "ip", device=_proof(fx, device_id, key)
        )
    failures = await fx.auth.audit.search(AuditQuery(types=("user.login",), outcome="failure"))
    assert "require_hardware_key" in failures[-1].reason


async def test_change_password_needs_the_current_one_and_a_second_factor():
    """The account page's password change (UserService.change_password): the policy's
    one-line error, a wrong current password (a counted failure), no proof, then a TOTP code;
    the new password logs in, the old one no longer does."""
    fx = await make_auth()
    secret, _ = await enrol(fx)
    new = PASSWORD + " again"
    code = pyotp.TOTP(secret).at(fx.clock.now())
    with pytest.raises(BadParameter, match="password too short"):
        await fx.users.change_password("alice", PASSWORD, "short", "ip", otp=code)
    with pytest.raises(AuthenticationFailed, match="current password is wrong"):
        await fx.users.change_password("alice", "not it at all!", new, "ip", otp=code)
    with pytest.raises(AccessDenied, match="confirm this change"):
        await fx.users.change_password("alice", PASSWORD, new, "ip")
    with pytest.raises(AccessDenied, match="TOTP code is wrong"):
        await fx.users.change_password("alice", PASSWORD, new, "ip", otp="000000")
    await fx.users.change_password("alice", PASSWORD, new, "ip", otp=code)
    fx.clock.advance(60)
    _, pub = new_public_key()
    code = pyotp.TOTP(secret).at(fx.clock.now())
    with pytest.raises(AuthenticationFailed):
        await fx.users.login("alice", PASSWORD, code, pub, timedelta(hours=1), "ip")
    certs = await fx.users.login("alice", new, code, pub, timedelta(hours=1), "ip")
    assert certs.identity.user == "alice"
    events = [e for e in await fx.auth.audit.read_from(0, 1000) if e.type == "user.password_set"]
    assert [(e.outcome, e.fields.get("method")) for e in events[-3:]] == [
        ("failure", "change"),
        ("failure", "change"),
        ("success", "change"),
    ]
