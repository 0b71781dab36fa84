"""Session recording end to end (issue 7, part 2), with real processes only.

One ``bastion start`` daemon for this module (auth + proxy + the built-in node ``builtin``),
the real OpenSSH ``ssh`` in a PTY (pexpect) through ``bsh config``, ``bsh recordings``/``bsh
play`` as subprocesses, and a remote node process (joined with a token) that also listens
directly, so its sessions outlive an auth outage: auth is killed mid-session and restarted,
and the recording still arrives, matching the SHA-256 of ``session.end``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    BIN,
    Cluster,
    Env,
    User,
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

CLUSTER = "rec.test"
BUILTIN = "builtin"
LOGIN = local_login()
TIMEOUT = 30


@pytest.fixture(scope="module")
def rec_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_binary("ssh")
    work = tmp_path_factory.mktemp("rec-cluster")
    config = work / "bastion.yaml"
    config.write_text("version: v1\nauth_service:\n  rate_limit: {average: 50, burst: 200}\n")
    cluster = start_cluster(work, "-c", str(config), "--node-name", BUILTIN, name=CLUSTER)
    try:
        yield Env(cluster, work / "homes")
    finally:
        cluster.stop()


def _user(env: Env, roles: str = "access") -> tuple[User, Path]:
    user = env.new_user(roles, LOGIN, via_proxy=True)
    done = env.bsh(user, "config")
    assert done.returncode == 0, done.stderr
    cfg = user.home / "ssh_config"
    cfg.write_text(done.stdout + "    BatchMode yes\n    ConnectTimeout 20\n")
    return user, cfg


def _recordings(env: Env, user: User) -> list[dict[str, Any]]:
    done = env.bsh(user, "recordings", "ls", "--format", "json")
    assert done.returncode == 0, done.stderr
    items: list[dict[str, Any]] = json.loads(done.stdout)
    return items


def _session_end(env: Env, user: User) -> dict[str, Any] | None:
    ends = env.events("--type", "session.end", "--user", user.name)
    return ends[-1] if ends else None


def _shell(argv: list[str], command: str, expect: str, pause_at: Any = None) -> None:
    """Drive an interactive ``ssh -tt`` in a PTY: type ``command``, see ``expect``, exit.
    ``pause_at()`` (when given) runs while the session is open, after the output was seen."""
    import pexpect

    child = pexpect.spawn(argv[0], argv[1:], dimensions=(30, 100), timeout=TIMEOUT,
                          env={**os.environ, "TERM": "xterm"})  # fmt: skip
    try:
        child.sendline(f"PS1='$ '; {command}")
        child.expect(expect)
        if pause_at is not None:
            pause_at()
            child.sendline("echo still-here")
            child.expect("still-here")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()


def test_pty_session_is_recorded_listed_played_and_audited(rec_env: Env, tmp_path: Path) -> None:
    env = rec_env
    alice, cfg = _user(env)
    _shell(["ssh", "-F", str(cfg), "-tt", f"{LOGIN}@{BUILTIN}.{CLUSTER}"],
           "echo rec-$((6*7))", "rec-42")  # fmt: skip

    items = wait_for(lambda: _recordings(env, alice), "the recording to be listed", TIMEOUT)
    [item] = items
    assert item["user"] == alice.name and item["node"] == BUILTIN and item["complete"]
    assert item["input_recorded"] is False
    listed = env.bsh(alice, "recordings", "ls")
    assert listed.returncode == 0 and item["session_id"][:8] in listed.stdout

    cast_file = tmp_path / "s.cast"
    done = env.bsh(alice, "recordings", "download", item["session_id"][:8], "-o", str(cast_file))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(cast_file.stat().st_mode) == 0o600  # it may hold what was typed
    data = cast_file.read_bytes()
    cast = parse_cast(data)
    assert "rec-42" in cast.output() and cast.header.width == 100 and cast.header.height == 30
    end = wait_for(lambda: _session_end(env, alice), "session.end", TIMEOUT)
    assert end["session_id"] == item["session_id"]
    assert end["fields"]["recording_sha256"] == hashlib.sha256(data).hexdigest() == item["sha256"]

    # the file plays in asciinema itself (it wants a terminal: pexpect gives it one)
    import pexpect

    asciinema = require_binary("asciinema")
    shown, status = pexpect.run(
        f"{asciinema} play --speed 20 --idle-time-limit 0.1 {cast_file}",
        withexitstatus=True,
        timeout=TIMEOUT,
    )
    assert status == 0 and b"rec-42" in shown, shown

    played = env.bsh(alice, "play", item["session_id"], "--speed", "50", "--skip-idle")
    assert played.returncode == 0, played.stderr
    assert "rec-42" in played.stdout
    audited = {e["type"] for e in env.events("--type", "recording.*", "--user", alice.name)}
    assert {"recording.view", "recording.download"} <= audited

    # another user sees none of it, and cannot fetch it by id
    bob, _ = _user(env)
    assert all(i["user"] == bob.name for i in _recordings(env, bob))
    refused = env.bsh(bob, "recordings", "download", item["session_id"], "-o", "x.cast")
    assert refused.returncode == 3 and "access denied" in refused.stderr
    assert "Traceback" not in refused.stderr
    denied = env.events("--type", "access.denied", "--user", bob.name)
    assert denied and denied[-1]["target"] == "session"

    # an auditor sees everyone's
    audrey = env.new_user("auditor", via_proxy=True)
    assert item["session_id"] in {i["session_id"] for i in _recordings(env, audrey)}
    only = env.bsh(audrey, "recordings", "ls", f"--user={alice.name}", "--since=1h",
                   "--format", "json")  # fmt: skip
    assert only.returncode == 0, only.stderr
    assert [i["session_id"] for i in json.loads(only.stdout)] == [item["session_id"]]
    got = env.bsh(audrey, "play", item["session_id"], "--speed", "50", "--skip-idle")
    assert got.returncode == 0 and "rec-42" in got.stdout


def _start_node(env: Env, tmp: Path, name: str, port: int) -> subprocess.Popen[bytes]:
    token = json.loads(
        env.admin_ok("tokens", "add", "--type=node", "--ttl=10m", "--format", "json")
    )["token"]
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


def _kill_auth(cluster: Cluster) -> None:
    cluster.proc.send_signal(signal.SIGKILL)
    cluster.proc.wait(timeout=10)


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


def test_recording_survives_an_auth_outage_mid_session(rec_env: Env, tmp_path: Path) -> None:
    env = rec_env
    name = unique("rnode")
    port = free_port()
    node = _start_node(env, tmp_path, name, port)
    try:
        wait_node(env, name)
        alice, _ = _user(env)
        profile = alice.home / "profiles" / CLUSTER
        direct = [
            "ssh", "-tt", "-F", "/dev/null", "-p", str(port),
            "-o", f"IdentityFile={profile / 'key'}",
            "-o", f"CertificateFile={profile / 'key-cert.pub'}",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", f"{LOGIN}@127.0.0.1",
        ]  # fmt: skip
        node_log = tmp_path / f"{name}.log"

        def outage() -> None:
            _kill_auth(env.cluster)

        # auth dies while the session is open; the session ends while auth is still down
        _shell(direct, "echo outage-$((40+2))", "outage-42", pause_at=outage)
        wait_for(
            lambda: "cannot upload recording yet" in node_log.read_text(errors="replace"),
            "the node to fail an upload while auth is down",
            TIMEOUT,
        )
        spool = tmp_path / name / "node" / "recording-spool"
        assert list(spool.glob("*.cast")), "the finished recording waits in the node's spool"
        _restart_auth(env.cluster)

        def arrived() -> list[dict[str, Any]]:
            return [i for i in _recordings(env, alice) if i["node"] == name]

        [item] = wait_for(arrived, "the spooled recording to reach auth", 60)
        data_file = tmp_path / "o.cast"
        done = env.bsh(alice, "recordings", "download", item["session_id"], "-o", str(data_file))
        assert done.returncode == 0, done.stderr
        data = data_file.read_bytes()
        assert "still-here" in parse_cast(data).output()  # typed after auth died
        end = wait_for(lambda: _session_end(env, alice), "the queued session.end", TIMEOUT)
        assert end["fields"]["recording_sha256"] == hashlib.sha256(data).hexdigest()
        assert not list(spool.glob("*.cast"))
    finally:
        if env.cluster.proc.poll() is not None:
            _restart_auth(env.cluster)
        stop(node)


def test_a_node_killed_mid_session_uploads_what_it_spooled(rec_env: Env, tmp_path: Path) -> None:
    env = rec_env
    name = unique("knode")
    port = free_port()
    node = _start_node(env, tmp_path, name, port)
    try:
        wait_node(env, name)
        alice, _ = _user(env)
        profile = alice.home / "profiles" / CLUSTER
        import pexpect

        child = pexpect.spawn(
            "ssh",
            ["-tt", "-F", "/dev/null", "-p", str(port), "-o", f"IdentityFile={profile / 'key'}",
             "-o", f"CertificateFile={profile / 'key-cert.pub'}", "-o", "IdentitiesOnly=yes",
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{LOGIN}@127.0.0.1"],
            timeout=TIMEOUT,
        )  # fmt: skip
        try:
            child.sendline("echo before-$((1+1))-crash")
            child.expect("before-2-crash")
            node.send_signal(signal.SIGKILL)  # the node dies; the session with it
            node.wait(timeout=10)
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        node = _start_node(env, tmp_path, name, port)  # restart: recovers and uploads

        def arrived() -> list[dict[str, Any]]:
            return [i for i in _recordings(env, alice) if i["node"] == name]

        [item] = wait_for(arrived, "the recovered recording to reach auth", 60)
        assert item["complete"] is False
        data = env.bsh(alice, "recordings", "download", item["session_id"], "-o", "-")
        assert data.returncode == 0 and "before-2-crash" in data.stdout
    finally:
        stop(node)
        time.sleep(0)


def test_recordings_in_s3_compatible_storage(tmp_path: Path) -> None:
    """The daemon configured with ``auth_service.recordings.type: s3`` (moto's standalone S3
    server on loopback) stores and serves recordings from the bucket."""
    require_binary("ssh")
    import boto3
    import pexpect
    from moto import server as server_mod

    s3_server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3_server.start()
    host, s3_port = s3_server.get_host_and_port()
    endpoint = f"http://{host}:{s3_port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s")  # fmt: skip
    s3.create_bucket(Bucket="recs")
    config = tmp_path / "bastion.yaml"
    config.write_text(
        "version: v1\n"
        "auth_service:\n"
        "  rate_limit: {average: 50, burst: 200}\n"
        "  recordings: {type: s3, bucket: recs, prefix: cluster-a/, region: us-east-1,\n"
        f"               endpoint_url: '{endpoint}', access_key_id: k, secret_access_key: s}}\n"
    )
    cluster = start_cluster(tmp_path, "-c", str(config), "--node-name", BUILTIN, name=CLUSTER)
    try:
        env = Env(cluster, tmp_path / "homes")
        alice, cfg = _user(env)
        child = pexpect.spawn("ssh", ["-F", str(cfg), "-tt", f"{LOGIN}@{BUILTIN}.{CLUSTER}"],
                              timeout=TIMEOUT)  # fmt: skip
        try:
            child.sendline("echo s3-$((3*3))-ok; exit")
            child.expect("s3-9-ok")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        [item] = wait_for(lambda: _recordings(env, alice), "the recording in S3", TIMEOUT)
        sid = item["session_id"]

        def keys() -> set[str]:
            # moto keeps buckets per process: other tests' objects may share "recs"
            listed = s3.list_objects_v2(Bucket="recs", Prefix="cluster-a/").get("Contents", [])
            return {o["Key"] for o in listed}

        wanted = {f"cluster-a/{sid}.cast", f"cluster-a/{sid}.json"}
        wait_for(lambda: keys() == wanted, "both objects under the prefix", TIMEOUT)
        stored = s3.get_object(Bucket="recs", Key=f"cluster-a/{sid}.cast")["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == item["sha256"]
        assert "s3-9-ok" in parse_cast(stored).output()
        assert not (cluster.data_dir / "recordings").exists()  # nothing kept locally
    finally:
        cluster.stop()
        s3_server.stop()


def test_a_role_with_record_input_records_keystrokes(rec_env: Env, tmp_path: Path) -> None:
    env = rec_env
    role = unique("typing")
    spec = tmp_path / "role.yaml"
    spec.write_text(f"kind: role\nmetadata: {{name: {role}}}\nspec:\n  options:\n"
                    "    record_input: true\n")  # fmt: skip
    env.admin_ok("create", "-f", str(spec))
    carol = env.new_user(f"access,{role}", LOGIN, via_proxy=True)
    done = env.bsh(carol, "config")
    assert done.returncode == 0, done.stderr
    cfg = carol.home / "ssh_config"
    cfg.write_text(done.stdout + "    BatchMode yes\n")
    _shell(["ssh", "-F", str(cfg), "-tt", f"{LOGIN}@{BUILTIN}.{CLUSTER}"],
           "echo typed-$((2+3))", "typed-5")  # fmt: skip
    [item] = wait_for(lambda: _recordings(env, carol), "carol's recording", TIMEOUT)
    assert item["input_recorded"] is True
    got = env.bsh(carol, "recordings", "download", item["session_id"], "-o", "-")
    assert got.returncode == 0, got.stderr
    cast = parse_cast(got.stdout.encode())
    assert "echo typed-$((2+3))" in cast.input()  # the keystrokes, as typed
    assert "typed-5" in cast.output()


def test_play_in_a_terminal_pauses_and_seeks(rec_env: Env) -> None:
    import pexpect

    env = rec_env
    bob, cfg = _user(env)
    _shell(["ssh", "-F", str(cfg), "-tt", f"{LOGIN}@{BUILTIN}.{CLUSTER}"],
           "echo first-$((1+1)); sleep 6; echo second-$((40+2))", "second-42")  # fmt: skip
    [item] = wait_for(lambda: _recordings(env, bob), "the recording to be listed", TIMEOUT)
    child = pexpect.spawn(
        str(BIN / "bsh"),
        ["play", item["session_id"]],
        env={**os.environ, "BSH_HOME": str(bob.home), "NO_COLOR": "1"},
        dimensions=(30, 100),
        timeout=TIMEOUT,
    )
    try:
        child.expect("first-2")
        child.send(" ")  # pause: the second line, 6 s later in the recording, does not come
        assert child.expect([b"second-42", pexpect.TIMEOUT], timeout=8) == 1
        child.send("\x1b[C\x1b[C")  # forward 10 s, still paused: the skipped output at once
        child.expect("second-42", timeout=3)
        child.send("\x1b[D")  # back 5 s: the terminal is reset and redrawn up to there
        child.expect(b"\x1bc", timeout=3)
        child.expect("first-2", timeout=3)
        assert child.expect([b"second-42", pexpect.TIMEOUT], timeout=1) == 1
        child.send(" ")  # resume: the second line comes again, then playback ends
        child.expect("second-42", timeout=10)
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    assert child.exitstatus == 0
    piped = env.bsh(bob, "play", item["session_id"], "--speed", "50")  # no TTY: as before
    assert piped.returncode == 0 and "second-42" in piped.stdout and "\x1bc" not in piped.stdout
