"""Agents lose no audit event when auth is down AND the node restarts (issue 7), real processes.

One ``bastion start`` daemon (auth + proxy), a remote node process joined with a token that
listens directly, the real OpenSSH ``ssh`` in a PTY. Auth is killed; a session runs and ends on
the node; the node is SIGKILLed and restarted while auth is still down (its in-memory state is
gone: only the on-disk event spool has ``session.start``/``session.end``); auth comes back. The
events arrive exactly once and the recording, which auth stores only after its ``session.end``,
is stored with the SHA-256 that ``session.end`` carries.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from harness import (
    BIN,
    Cluster,
    Env,
    free_port,
    ping,
    start_cluster,
    stop,
    unique,
    wait_for,
    wait_node,
)

from bastion.recording.asciicast import parse_cast
from bastion.testing import require_binary
from bastion.testing.peers.sshd import local_login

pytestmark = pytest.mark.integration

CLUSTER = "spool.test"
LOGIN = local_login()
TIMEOUT = 30


@pytest.fixture(scope="module")
def spool_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_binary("ssh")
    work = tmp_path_factory.mktemp("spool-cluster")
    config = work / "bastion.yaml"
    config.write_text("version: v1\nauth_service:\n  rate_limit: {average: 50, burst: 200}\n")
    cluster = start_cluster(work, "-c", str(config), "--node-name", "builtin", name=CLUSTER)
    try:
        yield Env(cluster, work / "homes")
    finally:
        cluster.stop()


def _start_node(env: Env, tmp: Path, name: str, port: int, token: str) -> subprocess.Popen[bytes]:
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"data_dir: {tmp / name}\n"
        "auth_service: {enabled: false}\n"
        "proxy_service: {enabled: false}\n"
        "ssh_service:\n"
        f"  node_name: {name}\n"
        f"  listen_addr: 127.0.0.1:{port}\n"
        f"  proxy_server: {env.cluster.proxy}\n"
        f"  join_token: {token}\n"
        f"  ca_pin: {env.cluster.pin}\n"
    )
    log = (tmp / f"{name}.log").open("ab")
    return subprocess.Popen(
        [str(BIN / "bastion"), "start", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _restart_auth(cluster: Cluster) -> None:
    with cluster.log.open("ab") as out:
        cluster.proc = subprocess.Popen(
            cluster.proc.args, stdout=out, stderr=subprocess.STDOUT, cwd=cluster.data_dir.parent
        )

    def up() -> bool:
        try:
            return bool(ping(cluster.addr))
        except OSError:
            return False

    wait_for(up, "auth to answer again", TIMEOUT)


def test_events_spooled_on_disk_survive_auth_down_and_a_node_restart(
    spool_env: Env, tmp_path: Path
) -> None:
    import pexpect

    env = spool_env
    name, port = unique("snode"), free_port()
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
    node = _start_node(env, tmp_path, name, port, token)
    try:
        wait_node(env, name)
        alice = env.new_user("access", LOGIN, via_proxy=True)
        profile = alice.home / "profiles" / CLUSTER
        node_log = tmp_path / f"{name}.log"
        ssh = [
            "ssh", "-tt", "-F", "/dev/null", "-p", str(port),
            "-o", f"IdentityFile={profile / 'key'}",
            "-o", f"CertificateFile={profile / 'key-cert.pub'}", "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{LOGIN}@127.0.0.1",
        ]  # fmt: skip

        def preflight() -> list[str]:  # the node knows the roles (synced) before auth dies
            subprocess.run(["ssh", *ssh[2:], "true"], capture_output=True, timeout=TIMEOUT)
            ends = env.events("--type", "session.end", "--user", alice.name)
            return [e["session_id"] for e in ends if e["target"] == name]

        earlier = set(wait_for(preflight, "a first session on the node", TIMEOUT))
        _kill(env.cluster.proc)  # auth is down from here on: the whole session happens without it
        child = pexpect.spawn(
            ssh[0],
            ssh[1:],
            dimensions=(30, 100),
            timeout=TIMEOUT,
            env={**os.environ, "TERM": "xterm"},
        )
        try:
            child.sendline("PS1='$ '; echo spooled-$((40+2))")
            child.expect("spooled-42")
            child.sendline("exit")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        spool = tmp_path / name / "node" / "event-spool"
        wait_for(
            lambda: b'"session.end"' in (spool / "events.jsonl").read_bytes(),
            "session.end in the node's event spool",
            TIMEOUT,
        )
        _kill(node)  # the node dies while auth is down: nothing in memory survives
        node = _start_node(env, tmp_path, name, port, token)
        wait_for(
            lambda: "replaying queued events" in node_log.read_text(errors="replace"),
            "the restarted node to find its spooled events",
            TIMEOUT,
        )
        assert env.cluster.proc.poll() is not None  # auth is still down
        _restart_auth(env.cluster)

        def arrived() -> list[dict[str, Any]]:
            done = env.bsh(alice, "recordings", "ls", "--format", "json")
            assert done.returncode == 0, done.stderr
            items = json.loads(done.stdout)
            return [i for i in items if i["node"] == name and i["session_id"] not in earlier]

        [item] = wait_for(arrived, "the recording to be stored after its session.end", 90)
        sid = item["session_id"]
        starts = [e for e in env.events("--type", "session.start") if e["session_id"] == sid]
        ends = [e for e in env.events("--type", "session.end") if e["session_id"] == sid]
        assert len(starts) == 1 and len(ends) == 1  # exactly once, also after the resend
        happened = datetime.fromisoformat(ends[0]["fields"]["agent_time"])
        assert happened < datetime.fromisoformat(ends[0]["time"])  # stored later, by auth
        out = tmp_path / "o.cast"
        done = env.bsh(alice, "recordings", "download", sid, "-o", str(out))
        assert done.returncode == 0, done.stderr
        data = out.read_bytes()
        assert "spooled-42" in parse_cast(data).output()
        assert ends[0]["fields"]["recording_sha256"] == hashlib.sha256(data).hexdigest()
        wait_for(
            lambda: (spool / "events.jsonl").stat().st_size == 0,
            "the node's event spool to drain",
            TIMEOUT,
        )
        assert not (spool / "rejected.jsonl").exists()
    finally:
        if env.cluster.proc.poll() is not None:
            _restart_auth(env.cluster)
        stop(node)
