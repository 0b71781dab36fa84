"""App access: ``wrk`` through our proxy versus direct and versus nginx as a TLS reverse proxy.

One run on loopback (:mod:`bastion.testing.app_rig`): the peer app (aiohttp, its own process)
serves ``GET /hello`` (13 bytes);

* **direct**: wrk to the app over plain HTTP (the ceiling);
* **nginx** (Debian ``nginx-light``): TLS with the proxy's certificate, ``proxy_pass`` with
  upstream keep-alive, one worker (our proxy is one process), and its access log on (one
  line per request, as nginx ships) while ours audits requests (``--audit all|writes``),
  off with ``--audit none``;
* **ours**: wrk over TLS to ``https://grafana.proxy.test:PORT/hello`` with an app session cookie:
  session lookup, admission (RBAC, gate; cached 1 s), lock check, JWT assertion (reused 30 s),
  identity-header stripping, streaming forward, ``app.request`` audit as configured.

``*.proxy.test`` resolves to 127.0.0.1 inside a private mount namespace (``unshare -m`` with a
bind-mounted ``/etc/hosts``, root only) so that wrk sends the right SNI. nginx and ours run
interleaved for ``--rounds`` rounds (the best round of each is kept, both having seen the same
background load) and each round also records the CPU time the proxy process spent per request
(``/proc``: nginx's master and worker; ours: this process, auth included), a figure that holds
on a loaded machine, with the share of it spent in the kernel (``cpu_system_share``) and the
load average at the end of the round. Prints requests/s, p50, p99 and CPU/request per path,
the ratios ours/nginx and the event loop ours ran on (:func:`bastion.runtime.run`, as
``bastion start``: uvloop when installed, ``BASTION_EVENT_LOOP=asyncio`` forces asyncio's);
nothing is asserted.

Run: ``python bench/app.py`` (``--seconds 5 --rounds 2 --audit all|writes|none``,
``--sample 0.1`` to audit a tenth of the GET requests, ``--memory-backend``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bastion.logging import configure_logging
from bastion.runtime import event_loop_name, tune_runtime
from bastion.runtime import run as run_loop
from bastion.testing.app_rig import DOMAIN, AppRig, start_app_rig
from bastion.testing.peers.ports import free_port

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log {access_log};
  upstream app {{ server 127.0.0.1:{app_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name *.{domain};
    ssl_certificate {crt};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
"""


def _wrk(url: str, seconds: int, hosts: Path | None, headers: list[str]) -> dict[str, float]:
    cmd = ["wrk", "-t2", "-c50", f"-d{seconds}s", "--latency", *headers, url]
    if hosts is not None:
        inner = f"mount --bind {hosts} /etc/hosts && exec " + " ".join(f"'{c}'" for c in cmd)
        cmd = ["unshare", "--mount", "sh", "-c", inner]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def percentile(name: str) -> float:
        found = re.search(rf"{name}%\s+([\d.]+)(us|ms|s)", out)
        return float(found.group(1)) * scale[found.group(2)] if found else 0.0

    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of processes (from /proc), for a CPU cost per request that
    holds on a loaded machine where requests/s swing."""
    user = system = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


def _children(pid: int) -> list[int]:
    out = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


async def _measure(
    url: str, seconds: int, hosts: Path | None, headers: list[str], pids: list[int]
) -> dict[str, float]:
    user0, system0 = _cpu_seconds(pids)
    result = await asyncio.to_thread(_wrk, url, seconds, hosts, headers)
    user1, system1 = _cpu_seconds(pids)
    used = user1 - user0 + system1 - system0
    requests = result["rps"] * seconds
    result["cpu_us_per_req"] = round(used / requests * 1e6, 1) if requests else 0.0
    result["cpu_system_share"] = round((system1 - system0) / used, 2) if used else 0.0
    result["load_average"] = round(os.getloadavg()[0], 1)
    return result


def _best(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round with the most requests/s (the least disturbed by other load)."""
    return max(rounds, key=lambda r: r["rps"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-app-"))
    results: dict[str, Any] = {}
    ours: list[dict[str, float]] = []
    peer: list[dict[str, float]] = []
    async with start_app_rig(
        tmp,
        audit_requests=args.audit,
        sqlite=not args.memory_backend,
        audit_request_sample=args.sample,
    ) as rig:
        hosts = tmp / "hosts"
        hosts.write_text(
            Path("/etc/hosts").read_text() + f"\n127.0.0.1 {DOMAIN} grafana.{DOMAIN}\n"
        )
        results["direct"] = await asyncio.to_thread(
            _wrk, f"http://127.0.0.1:{rig.app_port}/hello", args.seconds, None, []
        )
        token = await rig.cookie(rig.alice, "grafana")
        cookie = ["-H", f"Cookie: __Host-bastion_app_session={token}"]
        have_nginx = bool(shutil.which("nginx") or Path("/usr/sbin/nginx").exists())
        for _ in range(args.rounds):  # interleaved: both see the same background load
            if have_nginx:
                logged = args.audit != "none"
                peer.append(await _nginx(rig, tmp, hosts, args.seconds, logged))
            ours.append(
                await _measure(
                    rig.url("grafana", "/hello"), args.seconds, hosts, cookie, [os.getpid()]
                )
            )
        rig_events = rig.audit.counts["app.request"]
    results["ours"] = _best(ours)
    results["ours_rounds_rps"] = [r["rps"] for r in ours]
    results["app_request_events"] = rig_events
    if peer:
        results["nginx"] = _best(peer)
        results["nginx_rounds_rps"] = [r["rps"] for r in peer]
    if "nginx" in results and results["nginx"]["rps"]:
        results["ours_vs_nginx_rps"] = round(results["ours"]["rps"] / results["nginx"]["rps"], 2)
        nginx_p99 = results["nginx"]["p99_ms"] or 1e-9
        results["ours_vs_nginx_p99"] = round(results["ours"]["p99_ms"] / nginx_p99, 2)
        nginx_cpu = results["nginx"]["cpu_us_per_req"] or 1e-9
        results["ours_vs_nginx_cpu_per_req"] = round(
            results["ours"]["cpu_us_per_req"] / nginx_cpu, 2
        )
    results["ours_vs_direct_rps"] = round(
        results["ours"]["rps"] / (results["direct"]["rps"] or 1e-9), 2
    )
    results["audit_requests"] = args.audit
    results["nginx_access_log"] = args.audit != "none"
    results["audit_request_sample"] = args.sample
    return results


async def _nginx(
    rig: AppRig, tmp: Path, hosts: Path, seconds: int, logged: bool
) -> dict[str, float]:
    port = free_port()
    conf = tmp / "nginx.conf"
    crt, key = rig.tls_files
    access_log = f"{tmp}/nginx-access.log" if logged else "off"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp, app_port=rig.app_port, port=port, domain=DOMAIN, crt=crt, key=key,
            access_log=access_log,
        )
    )  # fmt: skip
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"])
    try:
        await asyncio.sleep(0.5)
        return await _measure(
            f"https://grafana.{DOMAIN}:{port}/hello", seconds, hosts, [], _children(proc.pid)
        )
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best kept)")
    parser.add_argument("--audit", choices=["all", "writes", "none"], default="all")
    parser.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="with --audit all: fraction of GET/HEAD requests audited (app_audit_request_sample)",
    )
    parser.add_argument("--log-level", default="info", help="the daemon's log level")
    parser.add_argument(
        "--memory-backend",
        action="store_true",
        help="auth over the in-memory test backend instead of SQLite (bastion start's default)",
    )
    args = parser.parse_args()
    configure_logging(args.log_level, "json", sys.stderr)
    tune_runtime()  # as bastion start does
    results = run_loop(run(args))
    results["event_loop"] = event_loop_name()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
