"""Device trust end to end (issue 13): real swtpm TPMs (one per simulated machine), the daemon,
``bctl devices`` and ``bsh device`` / ``bsh login`` / ``bsh ssh``.

A role with ``device_trust_mode: required`` (the shared cluster's own mode stays ``off``):
an unenrolled machine is refused with the enroll hint; enrollment by credential activation; the
ceremony at login puts the device into the certificates and SSH works; a reused token, an EK
already bound to another device and a copied profile on another TPM are refused; locking the
device ends its live session.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from harness import BIN, Env, User, run, unique, wait_for

from bastion.testing.peers.swtpm import SwTPM, start_swtpm

pytestmark = pytest.mark.integration

LOGIN = getpass.getuser()
NODE = socket.gethostname()
REQUIRED = "access denied: this resource requires a trusted device; run 'bsh device enroll'"


@pytest.fixture
def tpms(tmp_path: Path) -> Iterator[list[SwTPM]]:
    if shutil.which("swtpm") is None and os.environ.get("CI") != "true":
        pytest.skip("swtpm is not installed")
    started = [start_swtpm(tmp_path / "tpm1"), start_swtpm(tmp_path / "tpm2")]
    try:
        yield started
    finally:
        for tpm in started:
            tpm.stop()


def _bsh(user: User | Path, tpm: SwTPM, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    home = user.home if isinstance(user, User) else user
    return run("bsh", *args, home=home, input=input, env={"BSH_TPM_TCTI": tpm.tcti})


def _code(user: User, used: set[int]) -> str:
    """A TOTP code of a step the server accepts (now or next) after every one used so far."""
    while True:  # the server refuses a step not after the last one it accepted
        step = int(time.time() // 30) + 1
        if step > max(used):
            used.add(step)
            return str(pyotp.TOTP(user.secret).at(step * 30))
        time.sleep(0.5)


def _login(env: Env, home: Path, user: User, tpm: SwTPM, used: set[int]):  # type: ignore[no-untyped-def]
    return _bsh(
        home,
        tpm,
        "login",
        f"--proxy={env.cluster.proxy}",
        f"--user={user.name}",
        f"--ca-pin={env.cluster.pin}",
        "--password-stdin",
        input=f"{user.password}\n{_code(user, used)}\n",
    )


def _required_role(env: Env, tmp_path: Path) -> str:
    name = unique("dtreq")
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        "kind: role\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        "  options: {device_trust_mode: required}\n"
        f"  allow: {{logins: [{LOGIN}], node_labels: {{'*': '*'}}}}\n"
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


def test_device_trust_required_enroll_login_copy_lock(
    env: Env, tmp_path: Path, tpms: list[SwTPM]
) -> None:
    tpm1, tpm2 = tpms
    role = _required_role(env, tmp_path)
    user = env.new_user(role, LOGIN)
    now = int(time.time() // 30)
    used = {now - 1, now}  # the invite's code
    first = _login(env, user.home, user, tpm1, used)
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
    home_env = {**os.environ, "BSH_HOME": str(user.home), "NO_COLOR": "1"}
    session = subprocess.Popen(
        [str(BIN / "bsh"), "ssh", f"{LOGIN}@{NODE}", "echo started; sleep 60; echo done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=home_env,
    )  # fmt: skip
    assert session.stdout is not None and session.stdout.readline().strip() == "started"
    lock = json.loads(
        env.admin_ok("lock", f"--device={device_id}", "--message=lost laptop", "--format", "json")
    )
    out, err = session.communicate(timeout=20)
    assert "done" not in out and "lost laptop" in out + err, (out, err)
    env.admin_ok("rm", f"lock/{lock['metadata']['name']}")
    wait_for(
        lambda: env.bsh(user, "ssh", f"{LOGIN}@{NODE}", "echo back").returncode == 0,
        "access after the lock is lifted",
        timeout=15,
    )

    # The profile copied to another machine (another TPM): the ceremony fails, SSH is refused.
    copy = tmp_path / "laptop2"
    shutil.copytree(user.home, copy)
    stolen = _login(env, copy, user, tpm2, used)
    assert "device authentication failed" in stolen.stderr, stolen.stderr
    refused = run("bsh", "ssh", f"{LOGIN}@{NODE}", "echo no", home=copy)
    assert refused.returncode != 0 and REQUIRED in refused.stderr, refused.stderr
    failures = env.events("--type", "device.authn", "--user", user.name)
    assert any(e.get("outcome") == "failure" for e in failures), failures
