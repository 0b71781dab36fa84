"""Device trust: an EK certificate's intermediate CA fetched from the URL in the certificate
(``device_trust.fetch_ek_intermediates``), as real TPM vendors publish it.

A swtpm manufactured by a local "vendor" CA (root + intermediate) whose EK certificates name
the intermediate's URL (AIA caIssuers) on a small HTTP server of this test on 127.0.0.1. The
cluster trusts the vendor root only. With the server down, enrollment is refused with the
one-line error naming the URL (audited, the token not spent); with it up, the TPM enrolls
and auth keeps the intermediate under its data dir. Runs on the shared session cluster
(its auth preference restored afterwards).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from harness import Env, run, unique

from bastion.auth import ek_fetch
from bastion.auth.ek_fetch import IssuerFetchError, fetch_issuer
from bastion.testing import missing_peer
from bastion.testing.peers.ports import free_port
from bastion.testing.peers.swtpm import SwTPM, manufacture, start_swtpm

pytestmark = pytest.mark.integration


@dataclass
class Vendor:
    tpm: SwTPM
    root: Path
    url: str
    der: bytes
    port: int


@pytest.fixture
def vendor(tmp_path: Path) -> Iterator[Vendor]:
    if shutil.which("swtpm_setup") is None or shutil.which("swtpm") is None:
        missing_peer("swtpm_setup is not installed (Debian package swtpm-tools)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/pki/ek-ca.crt"
    ca = manufacture(tmp_path / "tpm", tmp_path / "ca", aia_url=url)
    der = x509.load_pem_x509_certificate(ca.issuer.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    tpm = start_swtpm(tmp_path / "tpm")
    try:
        yield Vendor(tpm=tpm, root=ca.root, url=url, der=der, port=port)
    finally:
        tpm.stop()


def _serve(der: bytes, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-cert")
            self.send_header("Content-Length", str(len(der)))
            self.end_headers()
            self.wfile.write(der)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _enroll(user_home: Path, tpm: SwTPM, token: str):  # type: ignore[no-untyped-def]
    return run(
        "bsh", "device", "enroll", f"--token={token}", home=user_home,
        env={"BSH_TPM_TCTI": tpm.tcti},
    )  # fmt: skip


def test_missing_intermediate_fetched_from_the_certificates_url(
    env: Env, tmp_path: Path, vendor: Vendor
) -> None:
    before = json.loads(
        env.admin_ok("get", "cluster_auth_preference/cluster-auth-preference", "--format", "json")
    )
    preference = json.loads(json.dumps(before))
    preference["spec"]["device_trust"]["ek_ca_bundle"] = str(vendor.root)  # the root only
    preference["spec"]["device_trust"]["fetch_ek_intermediates"] = True  # opt-in (egress)
    env.admin_ok("create", "--force", "-f", "-", input=json.dumps(preference))
    try:
        user = env.new_user("access", "nobody")
        added = json.loads(env.admin_ok(
            "devices", "add", f"--asset-tag={unique('SN')}", "--os=linux",
            f"--owner={user.name}", "--format", "json",
        ))  # fmt: skip
        device_id = added["metadata"]["name"]
        token = json.loads(env.admin_ok("devices", "enroll", device_id, "--format", "json"))

        # The vendor's server is down: one line naming the URL and what failed, audited.
        down = _enroll(user.home, vendor.tpm, token["token"])
        assert down.returncode != 0, down.stdout
        lines = [line for line in down.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in down.stderr, down.stderr
        assert f"EK certificate issuer could not be fetched from {vendor.url}: " in lines[0]
        refusals = env.events("--type", "device.enroll", "--outcome", "failure")
        assert any(vendor.url in event.get("reason", "") for event in refusals), refusals

        # Up: the intermediate is fetched, the chain verified to the configured root.
        server = _serve(vendor.der, vendor.port)
        try:
            up = _enroll(user.home, vendor.tpm, token["token"])
        finally:
            server.shutdown()
            server.server_close()
        assert up.returncode == 0, up.stderr
        credential = json.loads(env.admin_ok("devices", "show", device_id))["spec"]["credential"]
        assert credential["ek_cert_issuer"] == "CN=swtpm-localca-rootca", credential
        kept = list((env.cluster.data_dir / "ek-intermediates").glob("*.pem"))
        assert any(path.read_bytes().startswith(b"-----BEGIN CERTIFICATE") for path in kept)
    finally:
        env.admin_ok("create", "--force", "-f", "-", input=json.dumps(before))


def test_fetch_issuer_bounds_and_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetcher alone against a local server: DER, PKCS#7 and redirects; a status, a body
    too large, not a certificate, a timeout and a closed port are one line naming the URL."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs7
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vendor EK CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    der = cert.public_bytes(serialization.Encoding.DER)
    bodies = {
        "/ca.crt": der,
        "/ca.p7c": pkcs7.serialize_certificates([cert], serialization.Encoding.DER),
        "/big": b"0" * (65 * 1024),
        "/html": b"<html>maintenance</html>",
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/slow":
                time.sleep(1)
            if self.path.startswith("/hop"):
                self.send_response(302)
                self.send_header("Location", "/ca.crt" if self.path == "/hop" else self.path)
                self.end_headers()
                return
            body = bodies.get(self.path)
            try:
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")
            except OSError:
                pass  # the client stopped reading (too large, timed out)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(ek_fetch, "FETCH_TIMEOUT", 0.3)

    async def check() -> None:
        assert await fetch_issuer(f"{base}/ca.crt") == [cert]
        assert await fetch_issuer(f"{base}/ca.p7c") == [cert]
        assert await fetch_issuer(f"{base}/hop") == [cert]
        for path, what in [
            ("/missing", "HTTP 404"),
            ("/big", "larger than 64 KiB"),
            ("/html", "not a DER, PEM or PKCS#7 certificate"),
            ("/slow", "timed out"),
            ("/hop-loop", "too many redirects"),
        ]:
            with pytest.raises(IssuerFetchError) as err:
                await fetch_issuer(f"{base}{path}")
            assert str(err.value) == (
                f"EK certificate issuer could not be fetched from {base}{path}: {what}"
            )
        closed = f"http://127.0.0.1:{free_port()}/ca.crt"
        with pytest.raises(IssuerFetchError, match="could not be fetched from " + closed):
            await fetch_issuer(closed)

    try:
        asyncio.run(check())
    finally:
        server.shutdown()
        server.server_close()
