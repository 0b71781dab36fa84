"""Device ceremony cost: the auth side's MakeCredential-free ceremony (challenge, TPM sign,
verify, re-issue) against the floor, a bare tpm2-pytss sign on the same swtpm.

Run: .venv/bin/python bench/device.py  (needs swtpm). Prints p50/p99 and the ratio.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.auth.device_attest import authn_message, make_challenge, parse_ak, parse_ek
from bastion.auth.devices import DeviceService
from bastion.auth.server import AuthDeps, AuthServer
from bastion.backend.memory import MemoryBackend
from bastion.client.device.tpm import TPM
from bastion.clock import SystemClock
from bastion.testing.peers.swtpm import start_swtpm
from bastion.types.identity import Identity

N = 50


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


async def main() -> None:
    work = Path(tempfile.mkdtemp())
    swtpm = start_swtpm(work / "tpm")
    try:
        tpm = TPM(swtpm.tcti)
        unique = b"\x07" * 32
        clock = SystemClock()
        auth = AuthServer(AuthDeps(MemoryBackend(clock), clock, "bench.local", b"\x01" * 32))
        await auth.init()
        devices = DeviceService(auth)
        device = await devices.add("SN-BENCH", "linux", "", "admin")
        token = (await devices.create_enroll_token(device.name, None, "admin")).token
        ek, cert, ak = tpm.enrollment_keys(unique)
        begin = await devices.enroll_begin("alice", token, "tpm", ek, cert, ak, "", {}, "")
        secret = tpm.activate(unique, begin.credential_blob, begin.encrypted_secret)
        await devices.enroll_finish(
            "alice", begin.session, base64.b64encode(secret).decode(), "", ""
        )
        identity = Identity(cluster="bench.local", user="alice", roles=("access",),
                            expires=clock.now() + timedelta(hours=1))  # fmt: skip
        pub = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        floor, ceremony, issue = [], [], []
        for _ in range(N):
            t = time.perf_counter()
            tpm.sign(unique, b"x" * 120)
            floor.append(time.perf_counter() - t)
            t = time.perf_counter()
            challenge, nonce = await devices.authn_challenge(identity, device.name)
            msg = authn_message("bench.local", challenge, base64.b64decode(nonce),
                                {k: "" for k in ("os_name", "os_version", "kernel", "model",
                                                 "serial", "hostname", "bsh_version")})  # fmt: skip
            sig = tpm.sign(unique, msg)
            await devices.authn_finish(identity, challenge, sig, {}, pub, "")
            ceremony.append(time.perf_counter() - t)
            t = time.perf_counter()
            await auth.issuer.issue_user(identity, pub, "")
            issue.append(time.perf_counter() - t)
        akp, ekp = parse_ak(ak), parse_ek(ek, cert)
        t = time.perf_counter()
        for _ in range(N):
            make_challenge(ekp, akp, b"s" * 32)
        make = (time.perf_counter() - t) / N * 1000
        print(
            f"bare tpm2-pytss sign (floor): p50 {_pct(floor, 0.5):.2f} ms  "
            f"p99 {_pct(floor, 0.99):.2f} ms"
        )
        print(f"device ceremony (challenge, TPM sign, verify, re-issue): "
              f"p50 {_pct(ceremony, .5):.2f} ms  p99 {_pct(ceremony, .99):.2f} ms")  # fmt: skip
        print(f"certificate issuance alone (login without ceremony, issuing part): "
              f"p50 {_pct(issue, .5):.2f} ms")  # fmt: skip
        med_c, med_f, med_i = (statistics.median(v) for v in (ceremony, floor, issue))
        ratio = f"{med_c / med_f:.1f}x; without the re-issue {(med_c - med_i) / med_f:.1f}x"
        print(f"ceremony / floor: {ratio}")
        print(f"MakeCredential (enrollment, server side): {make:.2f} ms")
    finally:
        swtpm.stop()


if __name__ == "__main__":
    asyncio.run(main())
