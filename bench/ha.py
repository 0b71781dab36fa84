"""High availability: SSH connects per second through two proxies versus one, and fail-over time.

The deployment of docs/ha.md on loopback (:mod:`bastion.testing.ha`): two auth servers on one
PostgreSQL, two proxies in their own processes, HAProxy in front with the PROXY protocol v2, one
SSH node holding a reverse tunnel to each proxy. The client is in-process (the ``bsh ssh`` code
path: mTLS route through HAProxy to a proxy, then SSH end to end to the node, ``true``), so the
numbers are the cluster's, not Python start-up's.

* **connects/s**: ``--concurrency`` clients connect, run ``true`` and disconnect for
  ``--seconds``, with both proxies in HAProxy's rotation, then with one (the other stopped).
  The ratio two/one is the scaling of the proxy tier on this machine (every process shares the
  same CPUs, so it is bounded by the core count).
* **fail-over**: ``--rounds`` times, a proxy is killed (SIGKILL, alternating) and a client retries
  at once and every 50 ms: the time from the kill to the first successful session through the
  other proxy; p50 and p99. The killed proxy is restarted (same identity) before the next round.

Run: ``python bench/ha.py`` (about 3 minutes) or ``--quick`` (smoke test: 2 rounds, 2 s runs).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

from bastion.client.profile import ProfileStore
from bastion.client.ssh import connect
from bastion.errors import BastionError
from bastion.testing.ha import PASSWORD, HACluster, run, start_ha, tunnel_peers, wait_for
from bastion.testing.peers.postgres import create_database, start_postgres

NODE = "bench-node"


async def _session(profile_home: Path, login: str) -> None:
    profile = ProfileStore(profile_home).load()
    conn = await connect(profile, NODE, login, session_mfa=False, dial_timeout=5)
    async with conn:
        await conn.run("true", check=True)


async def _connects_per_second(home: Path, login: str, seconds: float, concurrency: int) -> float:
    done = 0
    failed = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, failed
        while time.monotonic() < end:
            try:
                await _session(home, login)
                done += 1
            except (OSError, BastionError, asyncssh.Error):
                failed += 1

    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    rate = done / (time.monotonic() - started)
    if failed:
        print(f"    ({failed} failed sessions)")
    return rate


async def _failover(ha: HACluster, home: Path, login: str, index: int) -> float:
    victim = ha.proxies[index]
    killed = time.monotonic()
    victim.kill()
    while True:
        try:
            await _session(home, login)
            return time.monotonic() - killed
        except (OSError, BastionError, asyncssh.Error):
            await asyncio.sleep(0.05)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _login(ha: HACluster, home: Path, login: str) -> None:
    invite = json.loads(ha.bctl("users", "add", "bencher", "--roles=access", f"--logins={login}",
                                "--format", "json"))  # fmt: skip
    token = invite["token"]
    done = run("bsh", "login", f"--proxy={ha.lb}", f"--invite={token}", f"--ca-pin={ha.pin}",
               "--password-stdin", home=home, input=f"{PASSWORD}\n")  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bsh login failed: {done.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: few rounds, short runs")
    parser.add_argument("--rounds", type=int, default=0, help="fail-over rounds (default 20)")
    parser.add_argument("--seconds", type=float, default=0, help="per throughput run (10)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 20)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    login = getpass.getuser()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        work = Path(tmp)
        pg = start_postgres(work / "pg")
        ha: HACluster | None = None
        try:
            dsn = asyncio.run(create_database(pg))
            print("starting 2 auth servers, 2 proxies, HAProxy and a node ...", flush=True)
            ha = start_ha(work / "ha", dsn, node=NODE)
            assert ha.node is not None
            home = work / "home"
            _login(ha, home, login)
            print(f"SSH connects/s through HAProxy ({args.concurrency} clients, {seconds:g} s):")
            two = asyncio.run(_connects_per_second(home, login, seconds, args.concurrency))
            print(f"  two proxies: {two:8.1f}/s")
            ha.proxies[1].stop()
            wait_for(lambda: ha is not None and ha.proxies[1].addr not in tunnel_peers(ha.node),  # type: ignore[arg-type]
                     "the node to notice")  # fmt: skip
            time.sleep(1.0)  # HAProxy's health check takes it out of the rotation
            one = asyncio.run(_connects_per_second(home, login, seconds, args.concurrency))
            print(f"  one proxy:   {one:8.1f}/s   two vs one: {two / one:.2f}x")
            results.update({"connects/s, two proxies": two, "connects/s, one proxy": one})
            ha.start_proxy(1)
            times: list[float] = []
            for n in range(rounds):
                index = n % 2
                wait_for(lambda: {p.addr for p in ha.proxies} <= tunnel_peers(ha.node),  # type: ignore[union-attr, arg-type]
                         "tunnels to both proxies", timeout=60)  # fmt: skip
                time.sleep(0.7)  # both back in HAProxy's rotation (checks every 300 ms)
                times.append(asyncio.run(_failover(ha, home, login, index)))
                ha.start_proxy(index)
            p50, p99 = _percentile(times, 0.5), _percentile(times, 0.99)
            print(f"fail-over, kill a proxy -> first session through the other ({rounds} rounds):")
            print(f"  p50 {p50 * 1000:7.0f} ms   p99 {p99 * 1000:7.0f} ms   "
                  f"mean {statistics.mean(times) * 1000:.0f} ms")  # fmt: skip
            results.update({"failover p50 s": p50, "failover p99 s": p99})
        finally:
            if ha is not None:
                ha.stop()
            pg.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
