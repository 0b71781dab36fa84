"""Renewal when things go wrong, and self-renewal of the cluster's own parts (issue 18).

One cluster of its own (it is stopped and started again), with short host certificates
(``host_certs.ttl: 1m``, renewed about every 3 s):

* the all-in-one's built-in node reissues its host certificate and keeps serving SSH;
* a proxy in its own process renews its host certificate and serves the new one from the next
  handshake on (hot-swapped TLS contexts);
* ``bbot start --join-method=oidc`` with client-credentials JWTs of npm's ``oidc-provider`` (served
  over HTTPS with a test CA, which this cluster's auth trusts through ``SSL_CERT_FILE``): the
  allowed client joins, another client is refused by the allow rule on its claims;
* ``bbot start`` while auth is down: its outputs stay the last good identity (never torn), it
  backs off; auth starts again on the same data dir and port: renewal resumes and OpenSSH
  ``ssh -F DIR/ssh/ssh_config`` through its output reaches the node.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from harness import BIN, START_TIMEOUT, Cluster, Env, ping, start_cluster, stop, unique, wait_for
from sso_peers import PEER_DIR, oidc_provider_dir
from test_bots_oidc import issuer_tls_files

from bastion.protocols.alpn import ALPN_SSH
from bastion.testing import missing_peer
from bastion.testing.peers.ports import free_port
from bastion.testing.peers.sshd import SshdUnavailable, find_ssh_binary, local_login

pytestmark = pytest.mark.integration

LOGIN = local_login()
SHORT_HOST_CERTS = "host_certs: {ttl: 1m, renew_at: 0.97, jitter: 0}\n"  # renew every ~2 s


CLUSTER_ENV: dict[str, str] = {}
"""The cluster's environment: SSL_CERT_FILE, the test CA of the OIDC issuer's HTTPS."""


@pytest.fixture(scope="module")
def issuer_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return issuer_tls_files(tmp_path_factory.mktemp("issuer-tls"))


@pytest.fixture(scope="module")
def own_cluster(
    tmp_path_factory: pytest.TempPathFactory, issuer_tls: tuple[Path, Path]
) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("bots-renewal")
    config = work / "bastion.yaml"
    config.write_text(SHORT_HOST_CERTS + "auth_service:\n  trusted_proxy_sources: [127.0.0.1/32]\n")
    CLUSTER_ENV["SSL_CERT_FILE"] = str(issuer_tls[0])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(issuer_tls[0]))
        c = start_cluster(work, "-c", str(config), name="renewal.local")
    try:
        yield c
    finally:
        c.stop()


def _json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # between two renames: read again
    return data


def _changes(path: Path, key: str, times: int = 1, timeout: float = 20) -> None:
    seen = {_json(path).get(key)}

    def changed() -> bool:
        seen.add(_json(path).get(key))
        return len(seen - {None}) > times

    wait_for(changed, f"{path.parent.name} to renew {times} time(s)", timeout=timeout)


def _served_cert(addr: str, client_dir: Path, ca: str) -> bytes:
    """The certificate the proxy presents on its SSH route (a user certificate as client)."""
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cadata=ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(client_dir / "identity.crt", client_dir / "identity.key")
    ctx.set_alpn_protocols([ALPN_SSH])
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


def test_builtin_node_and_standalone_proxy_renew_themselves(
    own_cluster: Cluster, tmp_path: Path
) -> None:
    env = Env(own_cluster, tmp_path)
    token = json.loads(env.admin_ok("tokens", "add", "--type=proxy", "--format", "json"))["token"]
    port = free_port()
    data = tmp_path / "proxy-data"
    config = tmp_path / "proxy.yaml"
    config.write_text(
        f"data_dir: {data}\n"
        "auth_service: {enabled: false}\n"
        "ssh_service: {enabled: false}\n" + SHORT_HOST_CERTS + "proxy_service:\n"
        f"  listen_addr: 127.0.0.1:{port}\n"
        f"  auth_server: {own_cluster.addr}\n"
        f"  join_token: {token}\n"
        f"  ca_pin: {own_cluster.pin}\n"
    )
    log = (tmp_path / "proxy.log").open("wb")
    proxy = subprocess.Popen(
        [str(BIN / "bastion"), "start", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        node_info = own_cluster.data_dir / "node" / "identity.json"
        _changes(node_info, "expires", times=2)  # the built-in node: reissued by auth in process
        ident = data / "proxy"
        wait_for(lambda: (ident / "tls.crt").exists(), "the proxy to join")
        joined = (ident / "tls.crt").read_text()
        _changes(ident / "identity.json", "renewed", times=2)
        admin = own_cluster.data_dir / "admin"

        def serves_current() -> bool:
            current = (ident / "tls.crt").read_text()
            return _served_cert(f"127.0.0.1:{port}", admin, (ident / "ca.pem").read_text()) == _der(
                current
            )

        wait_for(serves_current, "the proxy to serve its renewed certificate", timeout=10)
        assert _der((ident / "tls.crt").read_text()) != _der(joined)
        assert proxy.poll() is None
        text = (tmp_path / "proxy.log").read_text()
        assert "proxy certificate swapped in" in text and "Traceback" not in text
    finally:
        stop(proxy)


def _restart(cluster: Cluster, work: Path) -> None:
    """``bastion start`` again on the same data dir and ports (as the fixture started it)."""
    args = [str(a) for a in cluster.proc.args]  # type: ignore[union-attr]
    log = work / "daemon-restarted.log"
    with log.open("wb") as out:
        cluster.proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=work, env={**os.environ, **CLUSTER_ENV}
        )
    cluster.log = log
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert cluster.proc.poll() is None, cluster.output()
        try:
            ping(cluster.proxy)
            ping(cluster.addr)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"bastion did not start again:\n{cluster.output()}")


def _outputs(dest: Path) -> dict[str, tuple[Path, dict[str, bytes]]]:
    """Each output: the version its link points at and its files (a whole, readable set)."""
    found = {}
    for name in ("state", "identity", "ssh", "x509"):
        version = (dest / name).resolve()
        files = {str(p.relative_to(version)): p.read_bytes() for p in version.rglob("*")
                 if p.is_file()}  # fmt: skip
        found[name] = (version, files)
    return found


def test_bbot_rides_out_auth_down_then_back(own_cluster: Cluster, tmp_path: Path) -> None:
    try:
        find_ssh_binary("ssh")
    except SshdUnavailable as exc:
        missing_peer(str(exc))
    env = Env(own_cluster, tmp_path)
    name = unique("bot")
    added = json.loads(
        env.admin_ok("bots", "add", name, "--roles=access", f"--logins={LOGIN}", "--format=json")
    )
    dest = tmp_path / "out"
    cfg = tmp_path / "bbot.yaml"
    cfg.write_text(
        f"proxy: {own_cluster.proxy}\nca_pin: {own_cluster.pin}\ndest: {dest}\n"
        f"token: {added['token']}\nttl: 1m\nrenew_at: 0.96\njitter: 0\n"  # renew every ~2.4 s
    )
    log_file = tmp_path / "bbot.log"
    daemon = subprocess.Popen(
        [str(BIN / "bbot"), "start", "-c", str(cfg)],
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
    )
    state = dest / "state" / "state.json"
    try:
        wait_for(lambda: _json(state).get("generation", 0) >= 2, "a first renewal")
        _changes(state, "generation")  # stop auth just after a renewal, never during one
        before = _outputs(dest)
        own_cluster.stop()  # auth (and the proxy, and the node) down

        wait_for(lambda: log_file.read_text().count("renewal failed; retrying") >= 2,
                 "bbot to back off", timeout=20)  # fmt: skip
        assert _outputs(dest) == before  # still the last good identity, whole
        down_generation = _json(state)["generation"]

        _restart(own_cluster, tmp_path)
        wait_for(lambda: _json(state).get("generation", 0) > down_generation,
                 "renewal to resume", timeout=30)  # fmt: skip
        after = _outputs(dest)
        assert after["x509"][1]["tls.crt"] != before["x509"][1]["tls.crt"]  # a new certificate
        assert daemon.poll() is None

        host = f"{LOGIN}@{socket.gethostname()}.{own_cluster.cluster}"

        def ssh_ok() -> bool:  # the node re-registers its tunnel after the restart
            done = subprocess.run(
                ["ssh", "-F", str(dest / "ssh" / "ssh_config"), "-o", "ConnectTimeout=20",
                 host, "echo", "back"],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            return done.returncode == 0 and "back" in done.stdout

        wait_for(ssh_ok, "ssh -F through the bot's output to reach the node", timeout=20)
        text = log_file.read_text()
        assert "Traceback" not in text
    finally:
        stop(daemon)
        if own_cluster.proc.poll() is not None:  # leave the module's cluster running
            _restart(own_cluster, tmp_path)


def _start_cc_provider(
    work: Path, tls: tuple[Path, Path], audience: str, clients: dict[str, dict[str, str]]
) -> tuple[subprocess.Popen[str], str]:
    """npm oidc-provider issuing client-credentials JWTs over HTTPS (tests/peers/oidc)."""
    directory = oidc_provider_dir()
    shutil.copy(PEER_DIR / "cc_provider.mjs", directory / "cc_provider.mjs")
    config = work / "cc-provider.json"
    config.write_text(json.dumps({
        "port": free_port(), "cert": str(tls[0]), "key": str(tls[1]), "audience": audience,
        "clients": [{"client_id": cid, "client_secret": f"{cid}-secret-0123456789abcdef",
                     "claims": claims} for cid, claims in clients.items()],
    }))  # fmt: skip
    proc = subprocess.Popen(
        ["node", str(directory / "cc_provider.mjs"), str(config)], cwd=directory,
        stdout=subprocess.PIPE, stderr=(work / "cc-provider.log").open("w"), text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY "):
            return proc, line.split()[1]
    proc.wait(timeout=10)
    raise AssertionError(f"oidc-provider did not start: {(work / 'cc-provider.log').read_text()}")


def _client_token(issuer: str, ca: Path, client_id: str) -> str:
    """The client credentials grant: an access token (a JWT for the cluster's audience)."""
    secret = f"{client_id}-secret-0123456789abcdef"
    request = urllib.request.Request(
        f"{issuer}/token", data=b"grant_type=client_credentials",
        headers={"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode())
                 .decode(), "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    ctx = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(request, context=ctx, timeout=10) as resp:  # noqa: S310
        token = json.loads(resp.read())["access_token"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"  # a JWT, not an opaque token
    return str(token)


def test_bbot_oidc_join_with_oidc_provider_client_credentials(
    own_cluster: Cluster, issuer_tls: tuple[Path, Path], tmp_path: Path
) -> None:
    env = Env(own_cluster, tmp_path)
    proc, issuer = _start_cc_provider(
        tmp_path, issuer_tls, own_cluster.cluster,
        {"deployer": {"repository": "org/app"}, "intruder": {"repository": "org/app"}},
    )  # fmt: skip
    try:
        name = unique("ci")
        env.admin_ok(
            "bots", "add", name, "--roles=access", f"--logins={LOGIN}",
            f"--oidc-issuer={issuer}", f"--oidc-audience={own_cluster.cluster}",
            "--allow=client_id=deployer,repository=org/app",
        )  # fmt: skip

        def oneshot(client_id: str, dest: Path) -> subprocess.CompletedProcess[str]:
            token_file = tmp_path / f"{client_id}.jwt"
            token_file.write_text(_client_token(issuer, issuer_tls[0], client_id))
            return subprocess.run(
                [str(BIN / "bbot"), "start", "--oneshot", f"--proxy={own_cluster.proxy}",
                 f"--ca-pin={own_cluster.pin}", "--join-method=oidc", f"--bot={name}",
                 f"--id-token-file={token_file}", f"--dest={dest}", "--ttl=5m"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip

        joined = oneshot("deployer", tmp_path / "ok")
        assert joined.returncode == 0, joined.stderr
        assert _json(tmp_path / "ok" / "state" / "state.json")["user"] == f"bot-{name}"
        assert (tmp_path / "ok" / "ssh" / "key-cert.pub").read_text().startswith("ssh-ed25519-cert")
        refused = oneshot("intruder", tmp_path / "no")  # same claims but another client_id
        assert refused.returncode != 0
        assert "match no allow rule" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert not (tmp_path / "no" / "state").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
