"""The app agent as a product: ``bastion start --roles=app`` on "another host" joins the shared
cluster with an ``app`` token and heartbeats the apps of its ``app_service`` config (an HTTP app
that verifies the JWT against the proxy's JWKS, and a TCP echo service); the cluster's proxy
reaches both only through the agent's reverse tunnel. As a user: ``bsh apps ls``, ``bsh apps
login`` + curl with mTLS at ``https://NAME.apps.localhost:PORT``, ``bsh proxy app`` + a raw TCP
client; ``bctl get apps`` and ``bctl create -f app.yaml`` for the admin; audit of the TCP
session's start and end with bytes."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.testing import require_binary
from bastion.testing.peers.ports import free_port

sys.path.insert(0, str(Path(__file__).parent))
from harness import BIN, Env, stop, unique, wait_for  # noqa: E402

pytestmark = [pytest.mark.integration]

ECHO = """
import asyncio, sys
async def serve(r, w):
    while data := await r.read(65536):
        w.write(data); await w.drain()
    w.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def _ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline(), "the peer did not start"


@pytest.fixture
def peers(env: Env, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """(HTTP app port, echo port, app access log): on 127.0.0.1, reached by the agent."""
    http_port, echo_port = free_port(), free_port()
    log = tmp_path / "app.log"
    ca = env.cluster.data_dir / "admin" / "ca.pem"
    procs = [
        subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)], stdout=subprocess.PIPE),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.testing.peers.app",
                "--port",
                str(http_port),
                "--jwks",
                f"https://{env.cluster.proxy}/.well-known/jwks.json",
                "--ca",
                str(ca),
                "--audience",
                f"http://127.0.0.1:{http_port}",
                "--log",
                str(log),
            ],  # fmt: skip
            stdout=subprocess.PIPE,
        ),
    ]
    try:
        for proc in procs:
            _ready(proc)
        yield http_port, echo_port, log
    finally:
        for proc in procs:
            stop(proc)


def _start_agent(env: Env, tmp: Path, name: str, apps: str) -> subprocess.Popen[bytes]:
    out = env.admin_ok("tokens", "add", "--type=app", "--ttl=10m", "--format", "json")
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"data_dir: {tmp / name}\n"
        "app_service:\n"
        f"  agent_name: {name}\n"
        f"  proxy_server: {env.cluster.proxy}\n"
        f"  join_token: {json.loads(out)['token']}\n"
        f"  ca_pin: {env.cluster.pin}\n"
        f"  apps:\n{apps}"
    )
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [str(BIN / "bastion"), "start", "--roles=app", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_app_agent_http_and_tcp_apps_through_the_tunnel(
    env: Env, peers: tuple[int, int, Path], tmp_path: Path
) -> None:
    http_port, echo_port, app_log = peers
    web, echo, role = unique("web"), unique("echo"), unique("approle")
    env.admin_ok(
        "create", "-f", "-",
        input=f"kind: role\nmetadata: {{name: {role}}}\nspec:\n  allow:\n"
        "    app_labels: {env: apptest}\n",
    )  # fmt: skip
    apps = (
        f"    - {{name: {web}, uri: 'http://127.0.0.1:{http_port}', labels: {{env: apptest}}}}\n"
        f"    - {{name: {echo}, uri: 'tcp://127.0.0.1:{echo_port}', labels: {{env: apptest}}}}\n"
    )
    agent = _start_agent(env, tmp_path, unique("appagent"), apps)
    forwarder: subprocess.Popen[bytes] | None = None
    try:
        user, invite = env.add_user(role)
        via_proxy = Env(dataclasses.replace(env.cluster, addr=env.cluster.proxy), env.root)
        assert via_proxy.accept_invite(user, invite["token"]).returncode == 0

        def listed() -> list[dict[str, object]]:
            got = env.bsh(user, "apps", "ls", "env=apptest", "--format", "json")
            assert got.returncode == 0, got.stderr
            return [a for a in json.loads(got.stdout) if a["name"] in (web, echo)]

        found = wait_for(lambda: len(listed()) == 2 and listed(), "the agent's apps", 30)
        assert {a["name"] for a in found} == {web, echo}
        got = json.loads(env.admin_ok("get", f"app/{web}", "--format", "json"))
        assert got["spec"]["uri"] == f"http://127.0.0.1:{http_port}" and got["spec"]["host_id"]

        # HTTP through the tunnel: curl with the app certificate; the app checks the JWT.
        result = env.bsh(user, "apps", "login", web)
        assert result.returncode == 0, result.stderr
        crt = next(user.home.rglob(f"apps/{web}.crt"))
        port = env.cluster.proxy.rsplit(":", 1)[1]
        host = f"{web}.apps.localhost"

        def whoami() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    require_binary("curl"),
                    "-sS",
                    "--cert",
                    str(crt),
                    "--key",
                    str(crt.with_suffix(".key")),
                    "--cacert",
                    str(crt.with_suffix(".ca")),
                    "--resolve",
                    f"{host}:{port}:127.0.0.1",
                    "-H",
                    "Bastion-Jwt-Assertion: x",
                    f"https://{host}:{port}/whoami",
                ],  # fmt: skip
                capture_output=True,
                text=True,
                timeout=30,
            )

        # The agent heartbeats its apps before its tunnel may be up: until then the proxy
        # answers 502 "not reachable"; wait for the app, as for a node coming online.
        curl = wait_for(lambda: (r := whoami()).stdout.startswith("{") and r, "the app", 20)
        assert curl.returncode == 0, curl.stderr
        seen = json.loads(curl.stdout)
        assert seen["claims"]["sub"] == user.name and seen["path"] == "/whoami"

        # TCP: bsh apps login + bsh proxy app, bytes echoed, audited with byte counts.
        assert env.bsh(user, "apps", "login", echo).returncode == 0
        local = free_port()
        forwarder = subprocess.Popen(
            [str(BIN / "bsh"), "proxy", "app", echo, "--port", str(local)],
            env=_env(user.home),
            stderr=subprocess.PIPE,
        )
        assert forwarder.stderr is not None
        assert b"listening" in forwarder.stderr.readline()
        with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(b"hello app\n")
                buf = b""
                while len(buf) < 10:
                    buf += sock.recv(100)
                assert buf == b"hello app\n"
        ended = wait_for(
            lambda: [
                e for e in env.events("--type", "app.session.end")
                if e.get("user") == user.name
                and {**e, **e.get("fields", {})}.get("method") == "tcp"
            ],
            "app.session.end",
            15,
        )  # fmt: skip
        fields = {**ended[0], **ended[0].get("fields", {})}
        assert fields["bytes_in"] == 30 and fields["bytes_out"] == 30, ended[0]

        # HTTP app through bsh proxy app: plain HTTP locally, the certificate added.
        stop(forwarder)
        local = free_port()
        forwarder = subprocess.Popen(
            [str(BIN / "bsh"), "proxy", "app", web, "--port", str(local)],
            env=_env(user.home),
            stderr=subprocess.PIPE,
        )
        assert forwarder.stderr is not None
        assert b"listening" in forwarder.stderr.readline()
        plain = subprocess.run(
            [require_binary("curl"), "-sS", f"http://127.0.0.1:{local}/whoami",
             f"http://127.0.0.1:{local}/whoami?again=1"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert plain.returncode == 0 and plain.stdout.startswith("{"), plain
        first, second = (json.loads(x) for x in plain.stdout.replace("}{", "}\n{").splitlines())
        assert first["claims"]["sub"] == user.name and second["path"] == "/whoami?again=1"

        # bctl create -f app.yaml: an app the proxy reaches directly.
        direct = unique("direct")
        env.admin_ok(
            "create", "-f", "-",
            input=f"kind: app\nmetadata: {{name: {direct}, labels: {{env: apptest}}}}\n"
            f"spec: {{uri: 'http://127.0.0.1:{http_port}'}}\n",
        )  # fmt: skip
        names = [
            a["metadata"]["name"]
            for a in json.loads(env.admin_ok("get", "apps", "--format", "json"))
        ]
        assert direct in names and web in names
        assert "GET /whoami" in app_log.read_text()
    finally:
        if forwarder is not None:
            stop(forwarder)
        stop(agent)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "BSH_HOME": str(home), "NO_COLOR": "1"}
