"""Per-session MFA benchmark: what the ceremony adds to opening an SSH connection with bsh.

Run with ``python bench/session_mfa/run.py`` (``--rounds 30``) or ``--quick`` (3 rounds).
Set-up, all real processes on loopback: one ``bastion start`` daemon (auth + proxy + built-in
node, as ``bench/ssh`` starts it), second factor ``on`` with the software authenticator allowed,
and one user who registered a software security key at the invite.

Each round opens an SSH connection to the built-in node and runs ``true`` on it, in this process
(``bastion.client.ssh.connect``, the code path of ``bsh ssh`` without the CLI's start-up), in
three ways, interleaved so that drift hits all three alike:

* ``plain``: the login certificate, no question asked (bsh before per-session MFA);
* ``checked``: bsh as it is now, on a target that does not require MFA: one extra API request
  (``POST /v1/certs/session/challenge`` answers ``mfa_required: false``);
* ``mfa``: the cluster requires per-session MFA: challenge, assertion by the software
  authenticator, 1-minute certificates, then the connection with them. A USB security key adds
  the time the user takes to touch it.

Each round also times the added requests alone: ``ask`` (the question of ``checked``) and
``ceremony`` (challenge + assertion + certificates, without the connection).

Reported: p50/p90/max per way and the ratios of the medians to ``plain``. Exit status 0, or 2
when the set-up failed. Every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "ssh"))

from cluster import BIN, CMD_TIMEOUT, PASSWORD, BastionCluster, start_cluster  # noqa: E402

from bastion.client.mfa import origin_for, solve  # noqa: E402
from bastion.client.profile import ProfileStore  # noqa: E402
from bastion.client.session_mfa import session_credentials  # noqa: E402
from bastion.client.ssh import connect  # noqa: E402

PREF = """\
kind: cluster_auth_preference
metadata: {{name: cluster-auth-preference}}
spec:
  second_factor: "on"
  allow_software_authenticator: true
  require_session_mfa: {mfa}
"""


def _set_pref(cluster: BastionCluster, mfa: bool) -> None:
    cluster.admin("create", "--force", "-f", "-", input=PREF.format(mfa=str(mfa).lower()))


def _key_user(cluster: BastionCluster, key: Path) -> None:
    invite = json.loads(
        cluster.admin(
            "users", "add", "mfabench", "--roles=access", f"--logins={cluster.login}",
            "--format", "json",
        )
    )  # fmt: skip
    done = subprocess.run(
        [str(BIN / "bsh"), "login", f"--proxy={cluster.proxy_addr}", f"--invite={invite['token']}",
         f"--ca-pin={cluster.pin}", "--password-stdin", "--mfa=webauthn",
         f"--software-authenticator={key}"],
        input=PASSWORD + "\n", capture_output=True, text=True, env=cluster.env(),
        timeout=CMD_TIMEOUT, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bsh login --invite failed: {done.stderr.strip()}")


async def _once(cluster: BastionCluster, session_mfa: bool) -> float:
    profile = ProfileStore(cluster.home).load()
    start = time.perf_counter()
    conn = await connect(profile, cluster.node_name, cluster.login, session_mfa=session_mfa)
    try:
        await conn.run("true", check=True)
    finally:
        conn.close()
        await conn.wait_closed()
    return time.perf_counter() - start


async def _ask(cluster: BastionCluster) -> float:
    profile = ProfileStore(cluster.home).load()
    start = time.perf_counter()
    await session_credentials(
        profile, cluster.node_name, cluster.login, solver=_quiet_solver(cluster.proxy_addr)
    )
    return time.perf_counter() - start


def _quiet_solver(proxy: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    origin = origin_for(proxy)

    def run(options: dict[str, Any]) -> dict[str, Any]:
        return solve(options, origin, profile_dir=None)  # BSH_SOFTWARE_AUTHENTICATOR

    return run


def _summary(name: str, values: list[float], base: float) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    p50 = statistics.median(ordered)
    return (
        f"{name:9} p50 {p50 * 1000:7.1f} ms  p90 {p90 * 1000:7.1f} ms  "
        f"max {ordered[-1] * 1000:7.1f} ms  x{p50 / base:.2f} vs plain"
    )


def measure(cluster: BastionCluster, rounds: int) -> dict[str, list[float]]:
    names = ("plain", "checked", "mfa", "ask", "ceremony")
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        _set_pref(cluster, mfa=False)
        times["plain"].append(asyncio.run(_once(cluster, session_mfa=False)))
        times["checked"].append(asyncio.run(_once(cluster, session_mfa=True)))
        times["ask"].append(asyncio.run(_ask(cluster)))
        _set_pref(cluster, mfa=True)
        time.sleep(0.3)  # the node's watch learns the preference
        times["mfa"].append(asyncio.run(_once(cluster, session_mfa=True)))
        times["ceremony"].append(asyncio.run(_ask(cluster)))
    _set_pref(cluster, mfa=False)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 rounds (smoke test)")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="mfabench-") as tmp:
        work = Path(tmp)
        key = work / "key.json"
        os.environ["BSH_SOFTWARE_AUTHENTICATOR"] = str(key)
        try:
            cluster = start_cluster(work / "cluster")
        except (RuntimeError, OSError) as exc:
            print(f"set-up failed: {exc}", file=sys.stderr)
            return 2
        try:
            _set_pref(cluster, mfa=False)
            _key_user(cluster, key)
            cluster.wait_for_node(cluster.node_name)
            times = measure(cluster, rounds)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            print(f"set-up failed: {exc}", file=sys.stderr)
            return 2
        finally:
            cluster.stop()
    base = statistics.median(times["plain"])
    print(f"per-session MFA: {rounds} rounds, SSH connect + `true` to the built-in node")
    for name, values in times.items():
        print(_summary(name, values, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
