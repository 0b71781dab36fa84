"""WebAuthn end to end: the real daemon, the bsh CLI and Bastion's software authenticator.

Register a key at the invite, log in with password + key, add a passkey and log in without a
password (a key registered as a second factor never does), remove devices (never the last one),
refuse a cloned key, and refuse software authenticators on a cluster that does not allow them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from harness import Cluster, Env, User, fresh_totp, start_cluster, totp

from bastion.ca.x509 import identity_from_certificate
from bastion.mfa.softkey import SOFTWARE_AAGUID

PREF = """\
kind: cluster_auth_preference
metadata: {name: cluster-auth-preference}
spec:
  second_factor: "on"
  allow_software_authenticator: true
"""


@pytest.fixture(scope="module")
def wa_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("webauthn"), name="wa.local")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def wa(wa_cluster: Cluster, tmp_path: Path) -> Env:
    env = Env(wa_cluster, tmp_path)
    env.admin_ok("create", "--force", "-f", "-", input=PREF)
    return env


def bsh_key(env: Env, user: User, key: Path, *args: str, input: str | None = None):
    from harness import run

    return run(
        "bsh", *args, home=user.home, input=input, env={"BSH_SOFTWARE_AUTHENTICATOR": str(key)}
    )


def invite_with_key(env: Env, key: Path, roles: str = "access") -> User:
    user, invite = env.add_user(roles, "root")
    result = env.bsh(
        user,
        "login",
        f"--proxy={env.cluster.proxy}",
        f"--invite={invite['token']}",
        f"--ca-pin={env.cluster.pin}",
        "--password-stdin",
        "--mfa=webauthn",
        f"--software-authenticator={key}",
        input=user.password + "\n",
    )
    assert result.returncode == 0, result.stderr
    return user


def login_with_key(env: Env, user: User, key: Path):
    return bsh_key(
        env,
        user,
        key,
        "login",
        f"--proxy={env.cluster.proxy}",
        f"--user={user.name}",
        f"--ca-pin={env.cluster.pin}",
        "--password-stdin",
        input=user.password + "\n",
    )


def devices(env: Env, user: User, key: Path) -> list[dict]:
    result = bsh_key(env, user, key, "mfa", "ls", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cert_identity(user: User):
    profile = next((user.home / "profiles").iterdir())
    cert = x509.load_pem_x509_certificate((profile / "tls.crt").read_bytes())
    return identity_from_certificate(cert)


def test_key_at_invite_is_a_second_factor_never_alone_then_remove(wa: Env, tmp_path: Path):
    key = tmp_path / "key.json"
    user = invite_with_key(wa, key)
    [device] = devices(wa, user, key)
    assert (device["type"], device["software"], device["name"]) == ("webauthn", True, "key")
    assert cert_identity(user).mfa_device == device["id"]

    assert wa.bsh(user, "logout").returncode == 0
    result = login_with_key(wa, user, key)
    assert result.returncode == 0, result.stderr
    assert cert_identity(user).mfa_device == device["id"]
    [login] = [
        e
        for e in wa.events("--type", "user.login", "--user", user.name)
        if e["fields"].get("method") == "password+webauthn"
    ]
    assert login["fields"]["aaguid"] == str(SOFTWARE_AAGUID)
    assert login["fields"]["mfa_device"] == device["id"]

    # registered as a second factor: not a passkey, so it cannot log in alone (the key was not
    # asked for a discoverable credential; the server refusal is the next test)
    assert (device["passkey"], device["discoverable"]) == (False, False)
    assert wa.bsh(user, "logout").returncode == 0
    result = passwordless_login(wa, user, key)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert login_with_key(wa, user, key).returncode == 0

    # the same authenticator cannot register twice (excludeCredentials)
    result = bsh_key(wa, user, key, "mfa", "add", "--passwordless", "--name", "again")
    assert result.returncode != 0 and "already registered" in result.stderr
    result = bsh_key(wa, user, key, "mfa", "rm", "key")
    assert result.returncode != 0
    assert "last" in result.stderr and "Traceback" not in result.stderr
    failed = wa.events("--type", "mfa.remove", "--user", user.name)
    assert failed and failed[0]["outcome"] == "failure"


def test_passkey_added_with_passwordless_logs_in_alone(wa: Env, tmp_path: Path):
    user = wa.new_user("access", "root")  # TOTP at the invite: confirms the new device
    passkey = tmp_path / "passkey.json"
    add = bsh_key(
        wa,
        user,
        passkey,
        "mfa",
        "add",
        "--passwordless",
        "--name",
        "passkey",
        "--otp",
        fresh_totp(user),
    )
    assert add.returncode == 0, add.stderr
    assert "passkey" in add.stdout
    [device] = [d for d in devices(wa, user, passkey) if d["type"] == "webauthn"]
    assert (device["name"], device["passkey"], device["discoverable"]) == ("passkey", True, True)
    assert wa.bsh(user, "logout").returncode == 0
    result = passwordless_login(wa, user, passkey)
    assert result.returncode == 0, result.stderr
    assert f"Logged in as: {user.name}" in result.stdout
    assert cert_identity(user).mfa_device == device["id"]
    [login] = [
        e
        for e in wa.events("--type", "user.login", "--user", user.name)
        if e["fields"].get("method") == "passwordless"
    ]
    assert login["outcome"] == "success" and login["fields"]["mfa_device"] == device["id"]


def passwordless_login(env: Env, user: User, key: Path):
    return bsh_key(
        env,
        user,
        key,
        "login",
        f"--proxy={env.cluster.proxy}",
        "--auth=passwordless",
        f"--ca-pin={env.cluster.pin}",
    )


def test_discoverable_second_factor_is_refused_alone_and_audited(wa: Env, tmp_path: Path):
    # An authenticator may keep a discoverable credential although the cluster discouraged one
    # (platform authenticators do): it answers a passwordless request with the user handle,
    # and the server must still refuse it because it was registered as a second factor.
    key = tmp_path / "key.json"
    user = invite_with_key(wa, key)
    [device] = devices(wa, user, key)
    stored = json.loads(key.read_text())
    for credential in stored["credentials"]:
        credential["resident"] = True
    key.write_text(json.dumps(stored))
    assert wa.bsh(user, "logout").returncode == 0
    result = passwordless_login(wa, user, key)
    assert result.returncode != 0
    assert "registered as a second factor" in result.stderr
    assert "Traceback" not in result.stderr
    [refused] = [
        e
        for e in wa.events("--type", "user.login", "--user", user.name)
        if e["outcome"] == "failure" and e["fields"].get("method") == "passwordless"
    ]
    assert refused["fields"]["mfa_device"] == device["id"]
    assert "second-factor" in refused["reason"]
    # with the password it is still the user's second factor
    assert login_with_key(wa, user, key).returncode == 0


def test_cloned_key_is_refused_for_good(wa: Env, tmp_path: Path):
    key = tmp_path / "key.json"
    user = invite_with_key(wa, key)
    clone = tmp_path / "clone.json"
    shutil.copy(key, clone)
    assert login_with_key(wa, user, key).returncode == 0
    result = login_with_key(wa, user, clone)
    assert result.returncode != 0
    assert "counter regression" in result.stderr
    result = login_with_key(wa, user, key)  # the device is now refused whichever copy answers
    assert result.returncode != 0
    cloned = wa.events("--type", "mfa.cloned", "--user", user.name)
    assert cloned and cloned[0]["fields"]["aaguid"] == str(SOFTWARE_AAGUID)


def test_totp_user_adds_a_key_and_logs_in_with_it(wa: Env, tmp_path: Path):
    user = wa.new_user("access", "root")  # the default invite enrols TOTP
    key = tmp_path / "key.json"
    assert [d["type"] for d in devices(wa, user, key)] == ["totp"]
    result = bsh_key(wa, user, key, "mfa", "add", "--name", "yubi", "--otp", fresh_totp(user))
    assert result.returncode == 0, result.stderr
    result = login_with_key(wa, user, key)  # no TOTP code on stdin: the key answers
    assert result.returncode == 0, result.stderr
    names = {d["name"]: d for d in devices(wa, user, key)}
    assert set(names) == {"otp", "yubi"} and names["yubi"]["last_used"]
    result = bsh_key(wa, user, key, "mfa", "rm", "otp")  # confirmed with the key
    assert result.returncode == 0, result.stderr
    result = bsh_key(wa, user, key, "mfa", "rm", "yubi")
    assert result.returncode != 0 and "last" in result.stderr
    assert [d["name"] for d in devices(wa, user, key)] == ["yubi"]
    removed = wa.events("--type", "mfa.remove", "--user", user.name, "--outcome", "success")
    assert [e["fields"]["device_name"] for e in removed] == ["otp"]


def test_key_user_adds_totp_and_falls_back_to_it_without_a_key(wa: Env, tmp_path: Path):
    import os
    import re
    import subprocess

    from harness import BIN, CMD_TIMEOUT

    key = tmp_path / "key.json"
    user = invite_with_key(wa, key)
    proc = subprocess.Popen(
        [str(BIN / "bsh"), "mfa", "add", "--type", "totp", "--name", "phone"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BSH_HOME": str(user.home), "BSH_SOFTWARE_AUTHENTICATOR": str(key)},
    )
    assert proc.stderr and proc.stdin
    err = []
    for line in proc.stderr:
        err.append(line)
        match = re.search(r"secret: ([A-Z2-7]+)", line)
        if match:
            user.secret = match.group(1)
            break
    out, rest = proc.communicate(totp(user.secret) + "\n", timeout=CMD_TIMEOUT)
    assert proc.returncode == 0, "".join(err) + rest
    assert "'phone' added (totp)" in out
    # the invite remembered --software-authenticator in the profile; forget it ("no key here")
    settings = next((user.home / "profiles").iterdir()) / "mfa.json"
    assert json.loads(settings.read_text())["software_authenticator"] == str(key)
    settings.unlink()
    result = wa.bsh(  # no authenticator here: bsh says so and uses the TOTP code
        user,
        "login",
        f"--proxy={wa.cluster.proxy}",
        f"--user={user.name}",
        "--password-stdin",
        input=f"{user.password}\n{totp(user.secret, 1)}\n",
    )
    assert result.returncode == 0, result.stderr
    assert "using TOTP instead" in result.stderr
    [login] = [
        e
        for e in wa.events("--type", "user.login", "--user", user.name)
        if e["fields"].get("method") == "password+otp"
    ]
    assert login["fields"]["mfa_device"]


def test_software_authenticator_refused_unless_cluster_allows_it(env: Env, tmp_path: Path):
    user, invite = env.add_user("access", "root")
    result = env.bsh(
        user,
        "login",
        f"--proxy={env.cluster.proxy}",
        f"--invite={invite['token']}",
        f"--ca-pin={env.cluster.pin}",
        "--password-stdin",
        "--mfa=webauthn",
        f"--software-authenticator={tmp_path / 'key.json'}",
        input=user.password + "\n",
    )
    assert result.returncode != 0
    assert "software authenticators are not allowed" in result.stderr
    [failed] = env.events("--type", "mfa.add", "--user", user.name)
    assert failed["outcome"] == "failure"
