"""Device trust end to end (issue 13): real swtpm TPMs (one per simulated machine), the daemon,
``bctl devices`` and ``bsh device`` / ``bsh login`` / ``bsh ssh``.

A cluster of this module's own with ``second_factor: off`` (these tests are not about MFA, so
no login waits for a fresh TOTP step) and a role with ``device_trust_mode: required``:

* an unenrolled machine is refused with the enroll hint; enrollment by credential activation;
  the ceremony at login puts the device into the certificates and SSH works; a reused token,
  an EK already bound to another device and a copied profile on another TPM are refused;
  locking the device ends its live session;
* a device marked non-compliant loses its live session within a second, its next ceremony
  gives no device data; an OS below the minimum is refused and marks it non-compliant;
* an inventory sync from an MDM export (CSV file) adds, updates and marks missing devices;
  a device the inventory knows by serial auto-enrolls without a token.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    BIN,
    Cluster,
    Env,
    User,
    run,
    start_cluster,
    start_node,
    start_proxy,
    stop,
    unique,
    wait_for,
)

from bastion.testing import missing_peer
from bastion.testing.ha import connected_proxies
from bastion.testing.peers.swtpm import SwTPM, manufacture, start_swtpm

pytestmark = pytest.mark.integration

LOGIN = getpass.getuser()
NODE = socket.gethostname()
REQUIRED = "access denied: this resource requires a trusted device; run 'bsh device enroll'"
PREF = """\
kind: cluster_auth_preference
metadata: {name: cluster-auth-preference}
spec:
  second_factor: "off"
  device_trust:
    mode: %(mode)s
    min_os_version: {linux: "%(min_os)s"}
    ek_ca_bundle: "%(ek_ca)s"
    sources:
      - {name: mdm, url: "file://%(export)s", interval_seconds: 0, grace_seconds: 0,
         columns: {serial: SerialNumber, user: Owner, os_version: OSVersion}}
"""


@pytest.fixture(scope="module")
def dt_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("devices")
    config = work / "bastion.yaml"  # a proxy in its own process passes logins through to auth
    config.write_text("auth_service:\n  trusted_proxy_sources: [127.0.0.1/32]\n")
    cluster = start_cluster(work, "-c", str(config), name="dt.local")
    try:
        yield cluster
    finally:
        cluster.stop()


def _prefs(env: Env, min_os: str = "1.0", mode: str = "optional", ek_ca: str = "") -> Path:
    export = env.cluster.data_dir.parent / "mdm.csv"
    text = PREF % {"min_os": min_os, "export": export, "mode": mode, "ek_ca": ek_ca}
    env.admin_ok("create", "--force", "-f", "-", input=text)
    return export


@pytest.fixture
def env(dt_cluster: Cluster, tmp_path: Path) -> Env:
    env = Env(dt_cluster, tmp_path)
    _prefs(env)
    return env


@pytest.fixture
def tpms(tmp_path: Path) -> Iterator[list[SwTPM]]:
    if shutil.which("swtpm") is None:
        missing_peer("swtpm is not installed (Debian packages swtpm swtpm-tools)")
    started = [start_swtpm(tmp_path / "tpm1"), start_swtpm(tmp_path / "tpm2")]
    try:
        yield started
    finally:
        for tpm in started:
            tpm.stop()


def _bsh(user: User | Path, tpm: SwTPM, *args: str, profile: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    home = user.home if isinstance(user, User) else user
    extra = {"BSH_TPM_TCTI": tpm.tcti}
    if profile:
        extra["BSH_DEVICE_PROFILE"] = json.dumps(profile)
    return run("bsh", *args, home=home, env=extra)


def _login(env: Env, home: Path, user: User, tpm: SwTPM, profile: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    extra = {"BSH_TPM_TCTI": tpm.tcti}
    if profile:
        extra["BSH_DEVICE_PROFILE"] = json.dumps(profile)
    return run(
        "bsh",
        "login",
        f"--proxy={env.cluster.proxy}",
        f"--user={user.name}",
        f"--ca-pin={env.cluster.pin}",
        "--password-stdin",
        home=home,
        input=f"{user.password}\n",
        env=extra,
    )


def _required_role(env: Env, tmp_path: Path, *, auto_enroll: bool = False) -> str:
    name = unique("dtreq")
    rules = "  allow: {logins: [" + LOGIN + "], node_labels: {'*': '*'}"
    rules += ", rules: [{resources: [device], verbs: [enroll]}]}\n" if auto_enroll else "}\n"
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        "kind: role\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        "  options: {device_trust_mode: required}\n" + rules
    )
    env.admin_ok("create", "-f", str(spec))
    return name


def _device(env: Env, owner: str) -> tuple[str, str]:
    added = json.loads(
        env.admin_ok(
            "devices", "add", f"--asset-tag={unique('SN')}", "--os=linux",
            f"--owner={owner}", "--format", "json",
        )
    )  # fmt: skip
    token = json.loads(
        env.admin_ok("devices", "enroll", added["metadata"]["name"], "--format", "json")
    )
    return added["metadata"]["name"], token["token"]


def _session(user: User) -> subprocess.Popen[str]:
    home_env = {**os.environ, "BSH_HOME": str(user.home), "NO_COLOR": "1"}
    session = subprocess.Popen(
        [str(BIN / "bsh"), "ssh", f"{LOGIN}@{NODE}", "echo started; sleep 60; echo done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home_env,
    )  # fmt: skip
    assert session.stdout is not None and session.stdout.readline().strip() == "started"
    return session


def _ssh_ok(env: Env, user: User) -> bool:
    return env.bsh(user, "ssh", f"{LOGIN}@{NODE}", "echo ok").returncode == 0


def test_device_trust_required_enroll_login_copy_lock(
    env: Env, tmp_path: Path, tpms: list[SwTPM]
) -> None:
    tpm1, tpm2 = tpms
    role = _required_role(env, tmp_path)
    user = env.new_user(role, LOGIN)
    first = _login(env, user.home, user, tpm1)
    assert first.returncode == 0, first.stderr

    # Unenrolled: refused at the gate with the enroll hint, audited.
    refused = env.bsh(user, "ssh", f"{LOGIN}@{NODE}", "echo no")
    assert refused.returncode != 0 and REQUIRED in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    # Enrollment with credential activation on TPM 1.
    device_id, token = _device(env, user.name)
    enrolled = _bsh(user, tpm1, "device", "enroll", f"--token={token}")
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled with a tpm key" in enrolled.stdout
    shown = json.loads(env.admin_ok("devices", "show", device_id))
    assert shown["spec"]["enroll_status"] == "enrolled"
    assert shown["spec"]["credential"]["attestation"] == "tpm"
    assert shown["spec"]["credential"]["ek_key_sha256"]

    # A reused token is refused.
    again = _bsh(user, tpm1, "device", "enroll", f"--token={token}")
    assert again.returncode != 0 and "invalid, expired or already used" in again.stderr

    # The ceremony right after enrollment (and at every bsh login): the certificates carry
    # the device, SSH works.
    assert "now carries this device" in enrolled.stdout, enrolled.stderr
    ok = env.bsh(user, "ssh", f"{LOGIN}@{NODE}", "echo trusted")
    assert ok.returncode == 0 and "trusted" in ok.stdout, ok.stderr
    status = _bsh(user, tpm1, "device", "status")
    assert status.returncode == 0 and "enrolled" in status.stdout and device_id in status.stdout
    issued = env.events("--type", "cert.issued", "--user", user.name)
    assert any(e.get("device_id") == device_id or device_id in json.dumps(e) for e in issued)

    # The same TPM (same EK) cannot enroll as a second device.
    _, token2 = _device(env, user.name)
    bound = _bsh(user, tpm1, "device", "enroll", f"--token={token2}")
    assert bound.returncode != 0 and "already enrolled as another device" in bound.stderr

    # Locking the device ends its live session.
    session = _session(user)
    lock = json.loads(
        env.admin_ok("lock", f"--device={device_id}", "--message=lost laptop", "--format", "json")
    )
    out, err = session.communicate(timeout=20)
    assert "done" not in out and "lost laptop" in out + err, (out, err)
    env.admin_ok("rm", f"lock/{lock['metadata']['name']}")
    wait_for(lambda: _ssh_ok(env, user), "access after the lock is lifted", timeout=15)

    # The profile copied to another machine (another TPM): the ceremony fails, SSH is refused.
    copy = tmp_path / "laptop2"
    shutil.copytree(user.home, copy)
    stolen = _login(env, copy, user, tpm2)
    assert "device authentication failed" in stolen.stderr, stolen.stderr
    refused = run("bsh", "ssh", f"{LOGIN}@{NODE}", "echo no", home=copy)
    assert refused.returncode != 0 and REQUIRED in refused.stderr, refused.stderr
    failures = env.events("--type", "device.authn", "--user", user.name)
    assert any(e.get("outcome") == "failure" for e in failures), failures


def test_non_compliant_device_loses_sessions_and_posture(
    env: Env, tmp_path: Path, tpms: list[SwTPM]
) -> None:
    tpm = tpms[0]
    user = env.new_user(_required_role(env, tmp_path), LOGIN)
    assert _login(env, user.home, user, tpm).returncode == 0
    device_id, token = _device(env, user.name)
    enrolled = _bsh(user, tpm, "device", "enroll", f"--token={token}")
    assert enrolled.returncode == 0 and "now carries this device" in enrolled.stdout

    # Marked non-compliant: the live session ends (the device's lock; how fast is measured by
    # the lock benchmarks, not asserted here).
    session = _session(user)
    env.admin_ok("devices", "compliance", device_id, "non_compliant", "--reason=disk not encrypted")
    out, err = session.communicate(timeout=20)
    assert "done" not in out and "non-compliant" in out + err, (out, err)
    # Its next ceremony gives no device data: SSH is refused.
    again = _login(env, user.home, user, tpm)
    assert again.returncode == 0 and "device authentication failed" in again.stderr
    refused = env.bsh(user, "ssh", f"{LOGIN}@{NODE}", "echo no")
    assert refused.returncode != 0 and REQUIRED in refused.stderr, refused.stderr
    # Compliant again: the lock is gone, the ceremony works.
    env.admin_ok("devices", "compliance", device_id, "compliant")
    assert "device authentication failed" not in _login(env, user.home, user, tpm).stderr
    assert _ssh_ok(env, user)

    # An OS below the minimum: the ceremony is refused and the device marked non-compliant.
    _prefs(env, min_os="50.0")
    try:
        low = _login(env, user.home, user, tpm, profile={"os_version": "49.1"})
        assert "below the minimum 50.0" in low.stderr, low.stderr
        shown = json.loads(env.admin_ok("devices", "show", device_id))
        assert shown["spec"]["compliance"]["status"] == "non_compliant"
        assert shown["spec"]["compliance"]["source"] == "posture"
        assert not _ssh_ok(env, user)
        # Upgraded: the ceremony clears the posture mark.
        good = _login(env, user.home, user, tpm, profile={"os_version": "50.2"})
        assert "device authentication failed" not in good.stderr, good.stderr
        assert _ssh_ok(env, user)
    finally:
        _prefs(env)


def test_inventory_sync_and_auto_enrollment(env: Env, tmp_path: Path, tpms: list[SwTPM]) -> None:
    export = _prefs(env)
    user = env.new_user(_required_role(env, tmp_path, auto_enroll=True), LOGIN)
    assert _login(env, user.home, user, tpms[1]).returncode == 0
    mine, theirs = unique("SNA"), unique("SNB")
    header = "SerialNumber,OS,OSVersion,model,Owner,compliance,last_checkin\n"
    export.write_text(
        header
        + f"{mine},Ubuntu,24.04,ThinkPad T14,{user.name},Compliant,2026-01-02T03:04:05Z\n"
        + f"{theirs},macOS,14.5,MacBook Pro,someone-else,Noncompliant,\n"
        + ",Windows,11,,nobody,compliant,\n"
    )
    dry = env.admin_ok("devices", "sync", "--source=mdm", "--dry-run")
    assert mine in dry and "2 would be added" in dry and "(dry run)" in dry, dry
    assert mine not in env.admin_ok("devices", "ls")
    done = json.loads(env.admin_ok("devices", "sync", "--source=mdm", "--format", "json"))
    assert {row["asset_tag"] for row in done["added"]} == {mine, theirs}, done
    assert any("row 3" in error for error in done["errors"]), done
    shown = json.loads(env.admin_ok("devices", "show", mine))
    assert shown["spec"]["source"] == "mdm" and shown["spec"]["owner"] == user.name
    assert shown["spec"]["compliance"]["status"] == "compliant"

    # Auto-enrollment: no token, the inventory knows the serial, the role allows it.
    foreign = _bsh(user, tpms[1], "device", "enroll", profile={"serial": theirs})
    assert foreign.returncode != 0 and "not registered to you" in foreign.stderr
    auto = _bsh(user, tpms[1], "device", "enroll", profile={"serial": mine})
    assert auto.returncode == 0 and "now carries this device" in auto.stdout, auto.stderr
    assert _ssh_ok(env, user)
    events = env.events("--type", "device.enroll", "--user", user.name)
    assert any('"auto_enrollment": true' in json.dumps(e) for e in events), events

    # Missing from the export (grace 0): marked non-compliant, not deleted; SSH is refused.
    export.write_text(header + f"{theirs},macOS,14.5,MacBook Pro,someone-else,compliant,\n")
    again = env.admin_ok("devices", "sync", "--source=mdm")
    assert "marked missing" in again and mine in again, again
    assert "updated" in again and theirs in again, again
    shown = json.loads(env.admin_ok("devices", "show", mine))
    assert shown["spec"]["compliance"]["status"] == "non_compliant"
    assert shown["spec"]["enroll_status"] == "enrolled"
    wait_for(lambda: not _ssh_ok(env, user), "the missing device refused", timeout=10)


@pytest.fixture
def vendor_tpms(tmp_path: Path) -> Iterator[tuple[Path, SwTPM, SwTPM]]:
    """Two TPMs with EK certificates: one from "our" manufacturer CA (the path of its CA bundle
    first), one from another CA (swtpm_setup --create-ek-cert with swtpm_localca, ~1 s each)."""
    if shutil.which("swtpm_setup") is None or shutil.which("swtpm") is None:
        missing_peer("swtpm_setup is not installed (Debian package swtpm-tools)")
    if shutil.which("ssh") is None:
        missing_peer("the OpenSSH client is not installed")
    ours = manufacture(tmp_path / "tpm-ours", tmp_path / "ca-ours")
    manufacture(tmp_path / "tpm-other", tmp_path / "ca-other")
    bundle = tmp_path / "ek-cas.pem"  # the vendor's root and the intermediate that signs EKs
    bundle.write_text(ours.root.read_text() + ours.issuer.read_text())
    started = [start_swtpm(tmp_path / "tpm-ours"), start_swtpm(tmp_path / "tpm-other")]
    try:
        yield bundle, started[0], started[1]
    finally:
        for tpm in started:
            tpm.stop()


def test_required_at_a_standalone_proxy_with_vendor_ek_certificates(
    env: Env, tmp_path: Path, vendor_tpms: tuple[Path, SwTPM, SwTPM]
) -> None:
    """Cluster-wide ``mode: required`` and ``ek_ca_bundle`` set; a proxy in its own process and a
    node on another host (following it): without a trusted device SSH is refused there with the
    documented line; a TPM whose EK certificate comes from another CA cannot enroll; the TPM of
    the trusted manufacturer enrolls, and SSH through that proxy works."""
    ca_root, ours, other = vendor_tpms
    proxy, addr = start_proxy(env, tmp_path)
    node_name = unique("dtnode")
    node_token = json.loads(env.admin_ok("tokens", "add", "--type=node", "--format", "json"))
    node = start_node(env, tmp_path, node_name, node_token["token"])
    try:
        _prefs(env, mode="required", ek_ca=str(ca_root))
        name = unique("dtplain")
        env.admin_ok("create", "-f", "-", input=(
            f"kind: role\nmetadata: {{name: {name}}}\n"
            f"spec: {{allow: {{logins: [{LOGIN}], node_labels: {{'*': '*'}}}}}}\n"
        ))  # fmt: skip
        user = env.new_user(name, LOGIN)
        login = run(
            "bsh", "login", f"--proxy={addr}", f"--user={user.name}", f"--ca-pin={env.cluster.pin}",
            "--password-stdin", home=user.home, input=f"{user.password}\n",
        )  # fmt: skip
        assert login.returncode == 0, login.stderr

        # OpenSSH through `bsh proxy ssh` (bsh config) reaches the standalone proxy's gate
        # directly (the node holds its tunnel to that proxy only).
        config = user.home / "ssh_config"
        config.write_text(env.bsh(user, "config").stdout + "    BatchMode yes\n")
        dest = f"{LOGIN}@{node_name}.{env.cluster.cluster}"

        def ssh(command: str, to: str = dest) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["ssh", "-F", str(config), to, command], capture_output=True, text=True,
                timeout=60, check=False, env={**os.environ, "BSH_HOME": str(user.home)},
            )  # fmt: skip

        def answered(command: str, to: str = dest) -> subprocess.CompletedProcess[str] | None:
            done = ssh(command, to)
            return None if "offline" in done.stderr or "not found" in done.stderr else done

        # Untrusted (no device in the certificate): refused by the standalone proxy, one line.
        refused = wait_for(lambda: answered("echo no"), "the standalone proxy", timeout=60)
        assert refused.returncode != 0 and REQUIRED in refused.stderr, refused.stderr
        ours_lines = [line for line in refused.stderr.splitlines() if "access denied" in line]
        assert len(ours_lines) == 1 and "Traceback" not in refused.stderr, refused.stderr

        device_id, token = _device(env, user.name)
        foreign = _bsh(user, other, "device", "enroll", f"--token={token}")
        assert foreign.returncode != 0, foreign.stdout
        assert "no chain to a trusted manufacturer CA" in foreign.stderr, foreign.stderr
        # The refusal did not spend the token: the trusted manufacturer's TPM enrolls with it.
        enrolled = _bsh(user, ours, "device", "enroll", f"--token={token}")
        assert enrolled.returncode == 0 and "now carries this device" in enrolled.stdout, (
            enrolled.stderr
        )
        shown = json.loads(env.admin_ok("devices", "show", device_id))
        credential = shown["spec"]["credential"]
        assert credential["ek_cert_issuer"] and credential["ek_cert_serial"], credential

        trusted = wait_for(lambda: answered("echo trusted"), "the node", timeout=60)
        assert trusted.returncode == 0 and "trusted" in trusted.stdout, trusted.stderr

        # Every proxy heartbeats, the all-in-one's own too: the node holds a tunnel to each
        # (it used to drop the one it joined through once the standalone proxy appeared).
        node_log = tmp_path / f"{node_name}.log"
        both = {addr, env.cluster.proxy}
        wait_for(lambda: connected_proxies(node_log.read_text()) >= both, "a tunnel to each proxy")
        # The all-in-one's own node follows the proxy list in its process: the standalone proxy
        # reaches it too.
        builtin = f"{LOGIN}@{socket.gethostname()}.{env.cluster.cluster}"
        there = wait_for(lambda: answered("echo builtin", builtin), "the built-in node")
        assert there.returncode == 0 and "builtin" in there.stdout, there.stderr
    finally:
        _prefs(env)
        stop(node)
        stop(proxy)


def test_hardware_held_ssh_key_through_bsh_agent(
    env: Env, tmp_path: Path, tpms: list[SwTPM]
) -> None:
    """``require_hardware_key``: a software key is refused; ``bsh login --key-store=tpm`` keeps
    the SSH key in the TPM (certified by the enrolled AK), and real OpenSSH signs with it
    through bsh's agent; the blob in ``~/.bsh`` is useless on another TPM."""
    from cryptography import x509

    from bastion.ca.sshcert import identity_from_ssh_certificate, parse_ssh_certificate
    from bastion.ca.x509 import identity_from_certificate
    from bastion.client.device.tpm import TPM
    from bastion.client.device.tpm_key import TPMKey, load_blob
    from bastion.errors import BadParameter

    tpm1, tpm2 = tpms
    plain = unique("plain")
    spec = tmp_path / "roles.yaml"
    hardware = unique("hwkey")
    allow = "  allow: {logins: [" + LOGIN + "], node_labels: {'*': '*'}, app_labels: {'*': '*'}}\n"
    echo, echo_port = unique("echo"), _echo_server()
    spec.write_text(
        f"kind: role\nmetadata: {{name: {plain}}}\nspec:\n{allow}---\n"
        f"kind: role\nmetadata: {{name: {hardware}}}\nspec:\n"
        f"  options: {{require_hardware_key: true}}\n{allow}---\n"
        f"kind: app\nmetadata: {{name: {echo}}}\nspec: {{uri: 'tcp://127.0.0.1:{echo_port}'}}\n"
    )
    env.admin_ok("create", "-f", str(spec))
    user = env.new_user(plain, LOGIN)
    assert _login(env, user.home, user, tpm1).returncode == 0
    _, token = _device(env, user.name)
    enrolled = _bsh(user, tpm1, "device", "enroll", f"--token={token}")
    assert enrolled.returncode == 0, enrolled.stderr
    env.admin_ok("users", "update", user.name, f"--set-roles={hardware}")

    # A software key: refused at issuance, with the one-line way out.
    soft = _login(env, user.home, user, tpm1)
    assert soft.returncode != 0 and "bsh login --key-store=tpm" in soft.stderr, soft.stderr
    assert "Traceback" not in soft.stderr

    # The TPM-held key: certified, and OpenSSH signs through bsh's agent.
    hw = _tpm_login(env, user.home, user, tpm1)
    assert hw.returncode == 0, hw.stderr
    pdir = user.home / "profiles" / env.cluster.cluster
    assert (pdir / "key.tpm").exists() and not (pdir / "key").exists()
    assert "PRIVATE KEY" not in (pdir / "key.tpm").read_text()
    # The X.509 certificate is for the same TPM-held key: no tls.key, and bsh's TLS (the API,
    # here bsh ls) signs its handshakes in the TPM (bastion.client.device.tpm_tls).
    assert not (pdir / "tls.key").exists()
    tls = x509.load_pem_x509_certificate((pdir / "tls.crt").read_bytes())
    tpm_key = load_blob(pdir)
    assert tpm_key is not None and tls.public_key() == tpm_key.public_key()
    assert identity_from_certificate(tls).key_attestation == "tpm"
    listed = _bsh(user, tpm1, "ls")
    assert listed.returncode == 0 and NODE in listed.stdout, listed.stderr
    status = _bsh(user, tpm1, "device", "status")
    assert status.returncode == 0, status.stderr
    _tls12_with_the_tpm_key(env, pdir)
    _tpm_app(user, tpm1, echo, pdir)
    ok = _bsh(user, tpm1, "ssh", f"{LOGIN}@{NODE}", "echo hardware")
    assert ok.returncode == 0 and "hardware" in ok.stdout, ok.stderr
    builtin = run(
        "bsh", "ssh", f"{LOGIN}@{NODE}", "echo builtin", home=user.home,
        env={"BSH_TPM_TCTI": tpm1.tcti, "BSH_SSH_CLIENT": "builtin"},
    )  # fmt: skip
    assert builtin.returncode == 0 and "builtin" in builtin.stdout, builtin.stderr
    # Plain OpenSSH with bsh config's block and a running `bsh device agent`.
    config = run("bsh", "config", home=user.home)
    assert config.returncode == 0 and "IdentityAgent" in config.stdout, config.stderr
    (tmp_path / "ssh_config").write_text(config.stdout)
    sock = Path(tempfile.mkdtemp(prefix="bsha-")) / "s"  # a Unix socket path is short
    agent = subprocess.Popen(
        [str(BIN / "bsh"), "device", "agent", f"--socket={sock}"],
        env={**os.environ, "BSH_HOME": str(user.home), "BSH_TPM_TCTI": tpm1.tcti},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(sock.exists, "bsh device agent listening", timeout=20)
        plain = subprocess.run(
            ["ssh", "-F", str(tmp_path / "ssh_config"), "-o", f"IdentityAgent={sock}",
             f"{LOGIN}@{NODE}.{env.cluster.cluster}", "echo plain"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert plain.returncode == 0 and "plain" in plain.stdout, plain.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        shutil.rmtree(sock.parent, ignore_errors=True)
    cert = parse_ssh_certificate((pdir / "key-cert.pub").read_text())
    assert identity_from_ssh_certificate(cert).key_attestation == "tpm"
    assert (pdir / "key-cert.pub").read_text().startswith("ecdsa-sha2-nistp256-cert-v01@")

    # The next login remembers the key store and reuses the key.
    before = (pdir / "key.pub").read_text()
    again = _login(env, user.home, user, tpm1)
    assert again.returncode == 0, again.stderr
    assert (pdir / "key.pub").read_text() == before

    # Another TPM cannot use the blob: the key does not load, nor sign through the agent.
    blob = load_blob(pdir)
    assert blob is not None
    with pytest.raises(BadParameter, match="cannot load"):
        TPMKey(TPM(tpm2.tcti), blob).ssh_sign(b"data")
    copy = tmp_path / "laptop2"
    shutil.copytree(user.home, copy)
    stolen = _bsh(copy, tpm2, "ssh", f"{LOGIN}@{NODE}", "echo no")
    assert stolen.returncode != 0 and "no" not in stolen.stdout.split(), stolen.stdout
    stolen_api = _bsh(copy, tpm2, "ls")  # nor the TLS handshake: the API stays closed
    assert stolen_api.returncode != 0 and "Traceback" not in stolen_api.stderr
    assert "the TPM did not sign the TLS handshake" in stolen_api.stderr, stolen_api.stderr
    # A new key in the other TPM, certified by that TPM: the device proof and the key's
    # certification do not verify against the enrolled AK, so no certificate.
    (copy / "profiles" / env.cluster.cluster / "key.tpm").unlink()
    foreign = _tpm_login(env, copy, user, tpm2)
    assert foreign.returncode != 0 and "key attestation" in foreign.stderr, foreign.stderr


def _tls12_with_the_tpm_key(env: Env, pdir: Path) -> None:
    """bsh's context of the profile (the TPM-held key; the blob names its swtpm) held to TLS
    1.2 against the real proxy: the TPM signs the 1.2 CertificateVerify too."""
    import asyncio
    import ssl

    from bastion.client.api import AuthClient
    from bastion.client.tls import profile_context
    from bastion.contract.core import WHOAMI

    ctx = profile_context(pdir, pdir.name, [])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    async def whoami() -> str:
        async with AuthClient(env.cluster.proxy, ctx) as client:
            return (await client.send(WHOAMI)).user

    assert asyncio.run(whoami()) != ""


def _echo_server() -> int:
    """A TCP echo server in a thread of this process (the app behind ``bsh proxy app``)."""
    import socketserver
    import threading

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while data := self.request.recv(4096):
                self.request.sendall(data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def _tpm_app(user: User, tpm: SwTPM, app: str, pdir: Path) -> None:
    """``bsh apps login`` for the TPM-held key (no key file; under require_hardware_key, since
    the login's certificate vouches for that key), curl's flags refused in one line, and
    ``bsh proxy app`` presenting the key (the TPM signs the handshake)."""
    from cryptography import x509

    from bastion.client.device.tpm_key import load_blob
    from bastion.testing.peers.ports import free_port

    got = _bsh(user, tpm, "apps", "login", app)
    assert got.returncode == 0 and "bsh proxy app" in got.stdout, got.stderr
    assert not (pdir / "apps" / f"{app}.key").exists()
    cert = x509.load_pem_x509_certificate((pdir / "apps" / f"{app}.crt").read_bytes())
    blob = load_blob(pdir)
    assert blob is not None and cert.public_key() == blob.public_key()
    # a database certificate the same way (no database needed to issue it): no key file, and
    # the pg_service.conf entry names bsh proxy db's local listener, which psql can use
    db = _bsh(user, tpm, "db", "login", "orders", "--db-user", "reader")
    assert db.returncode == 0 and "psql cannot use a TPM-held key" in db.stdout, db.stderr
    assert not (pdir / "db" / "orders.key").exists()
    db_cert = x509.load_pem_x509_certificate((pdir / "db" / "orders.crt").read_bytes())
    assert db_cert.public_key() == blob.public_key()
    service = (pdir / "pg_service.conf").read_text()
    assert "host=127.0.0.1\nport=15432" in service and "sslkey" not in service, service
    curl = _bsh(user, tpm, "apps", "config", app)
    assert curl.returncode != 0 and "cannot use a TPM-held key" in curl.stderr, curl.stderr
    assert len(curl.stderr.strip().splitlines()) == 1, curl.stderr
    local = free_port()
    forwarder = subprocess.Popen(
        [str(BIN / "bsh"), "proxy", "app", app, "--port", str(local)],
        env={**os.environ, "BSH_HOME": str(user.home), "BSH_TPM_TCTI": tpm.tcti},
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert forwarder.stderr is not None
        assert b"listening" in forwarder.stderr.readline()
        with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
            sock.sendall(b"hello tpm\n")
            buf = b""
            while len(buf) < 10 and (chunk := sock.recv(100)):
                buf += chunk
            assert buf == b"hello tpm\n"
    finally:
        stop(forwarder)


def _tpm_login(env: Env, home: Path, user: User, tpm: SwTPM):  # type: ignore[no-untyped-def]
    return run(
        "bsh", "login", f"--proxy={env.cluster.proxy}", f"--user={user.name}",
        f"--ca-pin={env.cluster.pin}", "--password-stdin", "--key-store=tpm",
        home=home, input=f"{user.password}\n", env={"BSH_TPM_TCTI": tpm.tcti},
    )  # fmt: skip


def test_passkey_login_and_session_mfa_certificate_with_a_tpm_held_key(
    env: Env, tmp_path: Path, tpms: list[SwTPM]
) -> None:
    """Every login and certificate request runs the device ceremony, not only the password
    login: under ``require_hardware_key`` (and ``require_session_mfa``) a passkey login with
    ``--key-store=tpm`` gets certificates for the TPM-held key (``key_attestation: tpm``), and
    so does the 1-minute per-session MFA certificate ``bsh ssh`` asks for; a software key is
    refused with the one-line hint."""
    from cryptography import x509

    from bastion.ca.x509 import identity_from_certificate

    tpm = tpms[0]
    plain, hardware = unique("plain"), unique("hwmfa")
    allow = "  allow: {logins: [" + LOGIN + "], node_labels: {'*': '*'}}\n"
    spec = tmp_path / "roles.yaml"
    spec.write_text(
        f"kind: role\nmetadata: {{name: {plain}}}\nspec:\n{allow}---\n"
        f"kind: role\nmetadata: {{name: {hardware}}}\nspec:\n"
        f"  options: {{require_hardware_key: true, require_session_mfa: true}}\n{allow}"
    )
    env.admin_ok("create", "-f", str(spec))
    user = env.new_user(plain, LOGIN)  # the invite logs in
    _, token = _device(env, user.name)
    enrolled = _bsh(user, tpm, "device", "enroll", f"--token={token}")
    assert enrolled.returncode == 0, enrolled.stderr
    pref = PREF % {"min_os": "1.0", "export": "/nonexistent", "mode": "optional", "ek_ca": ""}
    pref = pref.replace(
        'second_factor: "off"', 'second_factor: "on"\n  allow_software_authenticator: true'
    )
    env.admin_ok("create", "--force", "-f", "-", input=pref)  # the env fixture restores it
    key = {"BSH_SOFTWARE_AUTHENTICATOR": str(tmp_path / "passkey.json"), "BSH_TPM_TCTI": tpm.tcti}
    added = run("bsh", "mfa", "add", "--passwordless", "--name=pk", home=user.home, env=key)
    assert added.returncode == 0, added.stderr
    env.admin_ok("users", "update", user.name, f"--set-roles={hardware}")

    def passkey(store: str):  # type: ignore[no-untyped-def]
        return run(
            "bsh", "login", f"--proxy={env.cluster.proxy}", f"--ca-pin={env.cluster.pin}",
            "--auth=passwordless", f"--key-store={store}", home=user.home, env=key,
        )  # fmt: skip

    soft = passkey("software")
    assert soft.returncode != 0 and "bsh login --key-store=tpm" in soft.stderr, soft.stderr
    assert len(soft.stderr.strip().splitlines()) == 1, soft.stderr
    held = passkey("tpm")
    assert held.returncode == 0, held.stderr
    pdir = user.home / "profiles" / env.cluster.cluster
    ident = identity_from_certificate(
        x509.load_pem_x509_certificate((pdir / "tls.crt").read_bytes())
    )
    assert ident.key_attestation == "tpm" and ident.device_id and ident.mfa_device

    # bsh ssh: the node requires per-session MFA; the 1-minute certificate runs the ceremony
    # too and is issued for the TPM-held key (the built-in client signs with the TPM), which
    # require_hardware_key admits only with the AK's certification over a fresh challenge.
    ok = run("bsh", "ssh", f"{LOGIN}@{NODE}", "echo session", home=user.home, env=key)
    assert ok.returncode == 0 and "session" in ok.stdout, ok.stderr
