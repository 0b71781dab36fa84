"""Per-session MFA, MFA for admin actions and mfa_device locks (issue 5, items 4, 6, 8) through
the real daemon, ``bsh``, ``bctl`` and the real OpenSSH client.

One cluster of its own (the tests change the cluster auth preference), whose all-in-one node is
node A (no labels), plus a remote node B (``env=staging``) joined with a token. Users get their
security key at the invite: Bastion's software authenticator (``BSH_SOFTWARE_AUTHENTICATOR``).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import pytest
from harness import (
    Cluster,
    Env,
    User,
    run,
    start_cluster,
    start_node,
    stop,
    unique,
    wait_for,
    wait_node,
)

from bastion.api.mfa_header import ADMIN_MFA_HEADER, encode_assertion
from bastion.client.api import AuthClient
from bastion.client.mfa import origin_for, solve
from bastion.client.profile import Profile, ProfileStore
from bastion.client.proxy_conn import ProxyTunnel, open_ssh_route
from bastion.client.session_mfa import (
    profile_api_context,
    session_credentials,
    session_ssl_context,
)
from bastion.client.ssh import host_ca_keys
from bastion.contract.base import ResourceDoc
from bastion.contract.resources import CREATE_RESOURCE
from bastion.errors import AccessDenied, MFARequired
from bastion.rbac.session_mfa import MFA_REQUIRED_MESSAGE
from bastion.testing import require_binary

pytestmark = pytest.mark.integration

LOGIN = getpass.getuser()


@pytest.fixture(scope="module")
def mfa_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("mfa-cluster"), name="mfa.local")
    try:
        yield c
    finally:
        c.stop()


PREF = """\
kind: cluster_auth_preference
metadata: {{name: cluster-auth-preference}}
spec:
  second_factor: "on"
  allow_software_authenticator: true
  require_session_mfa: {session}
"""


@pytest.fixture
def menv(mfa_cluster: Cluster, tmp_path: Path) -> Env:
    env = Env(mfa_cluster, tmp_path)
    env.admin_ok("create", "--force", "-f", "-", input=PREF.format(session="false"))
    return env


@pytest.fixture(scope="module")
def nodes(mfa_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """[node A (the daemon's own node), node B (a remote node, label env=staging)]."""
    work = tmp_path_factory.mktemp("mfa-nodes")
    env = Env(mfa_cluster, work)
    local = wait_for(
        lambda: json.loads(env.admin_ok("get", "nodes", "--format", "json")), "the local node"
    )
    node_a = local[0]["metadata"]["name"]
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
    node_b = unique("mfab")
    proc = start_node(env, work, node_b, token)
    try:
        wait_node(env, node_b)
        yield [node_a, node_b]
    finally:
        stop(proc)


def _role(env: Env, *, mfa: bool, labels: str = "{'*': '*'}") -> str:
    name = unique("r")
    env.admin_ok(
        "create",
        "-f",
        "-",
        input=(
            f"kind: role\nmetadata: {{name: {name}}}\nspec:\n"
            f"  options: {{require_session_mfa: {str(mfa).lower()}}}\n"
            f"  allow:\n    logins: [{LOGIN}]\n    node_labels: {labels}\n"
        ),
    )
    return name


def _user(env: Env, roles: str) -> User:
    """A user with password + TOTP and no security key."""
    user = env.new_user(roles, LOGIN, via_proxy=True)
    return user


def _key_user(env: Env, roles: str) -> tuple[User, Path]:
    """A user who registered a (software) security key at the invite, logged in via the proxy."""
    user, invite = env.add_user(roles, LOGIN)
    key = env.root / f"{user.name}-key.json"
    done = env.bsh(
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
    assert done.returncode == 0, done.stderr
    for remembered in user.home.glob("profiles/*/mfa.json"):
        remembered.unlink()  # the key is "at hand" only where a test sets the variable
    return user, key


def _with_key(user: User, key: Path | None, tool: str, *args: str) -> Any:
    env = {"BSH_SOFTWARE_AUTHENTICATOR": str(key)} if key else {}
    return run(tool, *args, home=user.home, env=env)


def _profile(user: User) -> Profile:
    return ProfileStore(user.home).load()


def _device_id(user: User, key: Path) -> str:
    done = _with_key(user, key, "bsh", "mfa", "ls", "--format", "json")
    assert done.returncode == 0, done.stderr
    [device] = [d for d in json.loads(done.stdout) if d["type"] == "webauthn"]
    return str(device["id"])


def _openssh(env: Env, user: User, node: str) -> subprocess.CompletedProcess[str]:
    require_binary("ssh")
    done = env.bsh(user, "config")
    assert done.returncode == 0, done.stderr
    cfg = user.home / "ssh_config"
    cfg.write_text(done.stdout + "    BatchMode yes\n    ConnectTimeout 30\n")
    return subprocess.run(
        ["ssh", "-F", str(cfg), f"{LOGIN}@{node}.{env.cluster.cluster}", "echo reached"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def test_ordinary_certificate_refused_where_session_mfa_is_required(
    menv: Env, nodes: list[str]
) -> None:
    user = _user(menv, _role(menv, mfa=True))
    for node in nodes:
        plain = _openssh(menv, user, node)
        assert plain.returncode != 0
        assert "reached" not in plain.stdout
        assert MFA_REQUIRED_MESSAGE in plain.stderr, plain.stderr
    events = menv.events("--type", "proxy.ssh", "--user", user.name)
    refused = [e for e in events if e["outcome"] == "failure"]
    assert refused and "per-session MFA required" in refused[-1]["reason"], events


def test_role_without_the_option_needs_no_mfa(menv: Env, nodes: list[str]) -> None:
    user = _user(menv, _role(menv, mfa=False))
    ran = menv.bsh(user, "ssh", f"{LOGIN}@{nodes[1]}", "echo reached")
    assert ran.returncode == 0 and "reached" in ran.stdout, ran.stderr


def test_bsh_ssh_passes_the_ceremony_and_plain_ssh_cannot(menv: Env, nodes: list[str]) -> None:
    user, key = _key_user(menv, _role(menv, mfa=True))
    for node in nodes:
        ran = _with_key(user, key, "bsh", "ssh", f"{LOGIN}@{node}", "echo reached")
        assert ran.returncode == 0 and "reached" in ran.stdout, ran.stderr
    plain = _openssh(menv, user, nodes[0])
    assert plain.returncode != 0 and MFA_REQUIRED_MESSAGE in plain.stderr, plain.stderr
    device = _device_id(user, key)
    done = [e for e in menv.events("--type", "mfa.session", "--user", user.name)]
    assert {e["target"] for e in done if e["outcome"] == "success"} == set(nodes)
    assert all(e["fields"]["mfa_device"] == device for e in done)
    # no security key at hand: a clear error, no traceback
    without = _with_key(user, None, "bsh", "ssh", f"{LOGIN}@{nodes[0]}", "echo reached")
    assert without.returncode != 0 and "reached" not in without.stdout
    assert "security key" in without.stderr and "Traceback" not in without.stderr


async def _session_cert_elsewhere(profile: Profile, nodes: list[str]) -> None:
    node_a, node_b = nodes
    creds = await session_credentials(
        profile, node_a, LOGIN, lambda o: solve(o, origin_for(profile.proxy), profile_dir=None)
    )
    assert creds is not None and creds.node == node_a and creds.login == LOGIN
    life = datetime.fromisoformat(creds.expires) - datetime.now(UTC)
    assert 0 < life.total_seconds() <= 60
    session_tls = session_ssl_context(profile, creds)
    user_key = asyncssh.read_private_key(str(profile.path / "key"))
    session_ssh = asyncssh.import_certificate(creds.ssh_cert)
    known = ([], host_ca_keys(profile), [])

    async def ssh(node: str, tls: Any, cert: Any) -> str:
        async with asyncssh.connect(
            node, 22, tunnel=ProxyTunnel(profile, LOGIN, 20, tls), config=[], username=LOGIN,
            client_keys=[(user_key, cert)], known_hosts=known, login_timeout=20,
        ) as conn:  # fmt: skip
            done = await conn.run("echo reached", check=True)
            return str(done.stdout)

    # node A, with both session certificates: allowed
    assert "reached" in await ssh(node_a, session_tls, session_ssh)
    # the proxy refuses the session X.509 certificate for node B
    with pytest.raises(AccessDenied, match=f"is for {LOGIN}@{node_a}, not {LOGIN}@{node_b}"):
        await open_ssh_route(profile, node_b, LOGIN, 22, asyncio.Protocol, 20, session_tls)
    # node B itself refuses the session SSH certificate (routed with the login certificate,
    # which a role without require_session_mfa allows there)
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh(node_b, None, session_ssh)


def test_session_certificate_for_node_a_is_refused_on_node_b(
    menv: Env, nodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = _role(menv, mfa=False, labels="{env: staging}")
    user, key = _key_user(menv, f"{_role(menv, mfa=True)},{staging}")
    monkeypatch.setenv("BSH_SOFTWARE_AUTHENTICATOR", str(key))
    asyncio.run(_session_cert_elsewhere(_profile(user), nodes))
    proxy = menv.events("--type", "proxy.ssh", "--user", user.name, "--outcome", "failure")
    assert any(f"is for {LOGIN}@{nodes[0]}" in e["reason"] for e in proxy), proxy

    def node_refused() -> list[dict[str, Any]]:
        found = menv.events("--type", "session.rejected", "--outcome", "failure")
        return [e for e in found if e["user"] == user.name and e["target"] == nodes[1]]

    [refused] = wait_for(node_refused, "node B's session.rejected event")
    assert f"is for {LOGIN}@{nodes[0]}" in refused["reason"]


def test_cluster_wide_require_session_mfa(menv: Env, nodes: list[str]) -> None:
    user, key = _key_user(menv, _role(menv, mfa=False))
    menv.admin_ok("create", "--force", "-f", "-", input=PREF.format(session="true"))
    try:
        plain = _openssh(menv, user, nodes[1])
        assert plain.returncode != 0 and MFA_REQUIRED_MESSAGE in plain.stderr, plain.stderr
        ran = _with_key(user, key, "bsh", "ssh", f"{LOGIN}@{nodes[1]}", "echo reached")
        assert ran.returncode == 0 and "reached" in ran.stdout, ran.stderr
    finally:
        menv.admin_ok("create", "--force", "-f", "-", input=PREF.format(session="false"))
    ran = _with_key(user, None, "bsh", "ssh", f"{LOGIN}@{nodes[1]}", "echo reached")
    assert ran.returncode == 0 and "reached" in ran.stdout, ran.stderr


def test_mfa_device_lock(menv: Env, nodes: list[str]) -> None:
    user, key = _key_user(menv, _role(menv, mfa=True))
    device = _device_id(user, key)
    menv.admin_ok("lock", f"--mfa-device={device}", "--message=key reported lost", "--ttl=5m")
    ran = _with_key(user, key, "bsh", "ssh", f"{LOGIN}@{nodes[0]}", "echo reached")
    assert ran.returncode != 0 and "key reported lost" in ran.stderr, ran.stderr
    # The login certificate names the locked key, so the authentication gate refuses it before
    # any ceremony (docs/authentication-gate.md), audited with the device.
    failed = menv.events("--type", "access.denied", "--user", user.name, "--outcome", "failure")
    assert failed and failed[-1]["fields"]["mfa_device"] == device
    assert "key reported lost" in failed[-1]["reason"]


# ---- MFA for admin actions -------------------------------------------------------------------

ROLE_YAML = "kind: role\nmetadata: {{name: {name}}}\nspec:\n  allow:\n    logins: [{login}]\n"


def test_bctl_admin_change_needs_the_security_key(menv: Env) -> None:
    user, key = _key_user(menv, "editor")
    name = unique("adm")
    source = user.home / "role.yaml"
    source.write_text(ROLE_YAML.format(name=name, login="a"))
    without = _with_key(user, None, "bctl", "create", "-f", str(source))
    assert without.returncode != 0 and "security key" in without.stderr, without.stderr
    assert "Traceback" not in without.stderr
    assert menv.admin("get", f"role/{name}").returncode != 0
    done = _with_key(user, key, "bctl", "create", "-f", str(source))
    assert done.returncode == 0, done.stderr
    assert menv.admin("get", f"role/{name}").returncode == 0
    reads = _with_key(user, None, "bctl", "get", "roles")  # reading needs no MFA
    assert reads.returncode == 0 and name in reads.stdout, reads.stderr
    [event] = menv.events("--type", "mfa.admin", "--user", user.name, "--outcome", "success")
    assert event["target"] == "POST /v1/resources/role"
    # the local admin identity of the auth host is exempt
    menv.admin_ok("rm", f"role/{name}")


async def _stolen_cert(profile: Profile) -> None:
    name = unique("stolen")
    path = f"/v1/resources/role/{name}"
    body = {"kind": "role", "metadata": {"name": name}, "spec": {"allow": {"logins": ["x"]}}}
    origin = origin_for(profile.proxy)
    ctx = profile_api_context(profile)
    async with AuthClient(profile.proxy, ctx) as client:
        with pytest.raises(MFARequired) as info:  # the admin's certificate alone
            await client.send(
                CREATE_RESOURCE, ResourceDoc.model_validate(body), path={"kind": "role"}
            )
        first = info.value
    assert first.challenge and first.scope.startswith("admin:POST /v1/resources/role ")

    async def send(method: str, url: str, data: Any, header: str | None) -> tuple[int, Any]:
        headers = {ADMIN_MFA_HEADER: header} if header else {}
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, f"https://{profile.proxy}{url}", json=data, ssl=ctx, headers=headers
            ) as resp,
        ):
            return resp.status, await resp.json(content_type=None)

    assertion = encode_assertion(solve(first.challenge, origin))
    other = {**body, "spec": {"allow": {"logins": ["root"]}}}
    status, reply = await send("POST", "/v1/resources/role", other, assertion)
    assert status == 403, reply  # signed for another body
    status, reply = await send("POST", "/v1/resources/role", body, assertion)
    assert status == 403, reply  # single use: the failed attempt consumed the challenge
    status, reply = await send("POST", "/v1/resources/role", body, None)
    assert status == 401 and reply["error"]["code"] == "mfa_required"
    good = encode_assertion(solve(reply["error"]["challenge"], origin))
    status, reply = await send("POST", "/v1/resources/role", body, good)
    assert status == 201, reply
    status, reply = await send("DELETE", path, None, good)
    assert status == 403, reply  # replayed for another request
    status, reply = await send("POST", "/v1/resources/role", body, good)
    assert status == 403, reply  # replayed for the very same request


def test_stolen_admin_certificate_cannot_change_policy(
    menv: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, key = _key_user(menv, "editor")
    monkeypatch.setenv("BSH_SOFTWARE_AUTHENTICATOR", str(key))
    asyncio.run(_stolen_cert(_profile(user)))
    refused = menv.events("--type", "mfa.admin", "--user", user.name, "--outcome", "failure")
    assert len(refused) >= 3 and all(e["reason"] for e in refused)


def test_require_mfa_for_admin_true_and_false(menv: Env) -> None:
    def strict(value: str) -> str:
        return PREF.format(session="false") + f"  require_mfa_for_admin: {value}\n"

    keyless = _user(menv, "editor")  # password + TOTP, no security key
    user, key = _key_user(menv, "editor")
    source = menv.root / "role.yaml"
    try:
        menv.admin_ok("create", "--force", "-f", "-", input=strict("true"))
        source.write_text(ROLE_YAML.format(name=unique("strict"), login="a"))
        refused = _with_key(keyless, None, "bctl", "create", "-f", str(source))
        assert refused.returncode != 0, refused.stdout
        assert "no security key" in refused.stderr, refused.stderr
        menv.admin_ok("create", "--force", "-f", "-", input=strict("false"))
        source.write_text(ROLE_YAML.format(name=unique("off"), login="a"))
        done = _with_key(user, None, "bctl", "create", "-f", str(source))  # key not at hand
        assert done.returncode == 0, done.stderr
    finally:
        menv.admin_ok("create", "--force", "-f", "-", input=PREF.format(session="false"))
    # unset again: the keyless editor needs no MFA, the editor with a key does
    source.write_text(ROLE_YAML.format(name=unique("default"), login="a"))
    assert _with_key(keyless, None, "bctl", "create", "-f", str(source)).returncode == 0
    source.write_text(ROLE_YAML.format(name=unique("default"), login="a"))
    assert _with_key(user, None, "bctl", "create", "-f", str(source)).returncode != 0
    refusals = menv.events("--type", "mfa.admin", "--user", keyless.name, "--outcome", "failure")
    assert refusals and "no WebAuthn device" in refusals[-1]["reason"]
