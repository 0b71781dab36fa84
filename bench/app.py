"""App access: ``wrk`` through our proxy versus direct and versus nginx as a TLS reverse proxy.

One run on loopback (:mod:`bastion.testing.app_rig`): the peer app (aiohttp, its own process)
serves ``GET /hello`` (13 bytes);

* **direct**: wrk to the app over plain HTTP (the ceiling);
* **nginx** (Debian ``nginx-light``): TLS with the proxy's certificate, ``proxy_pass`` with
  upstream keep-alive, one worker (our proxy is one process);
* **ours**: wrk over TLS to ``https://grafana.proxy.test:PORT/hello`` with an app session cookie:
  session lookup, admission (RBAC, gate; cached 1 s), lock check, JWT assertion (reused 30 s),
  identity-header stripping, streaming forward, ``app.request`` audit as configured.

``*.proxy.test`` resolves to 127.0.0.1 inside a private mount namespace (``unshare -m`` with a
bind-mounted ``/etc/hosts``, root only) so that wrk sends the right SNI. Prints requests/s and
p99 per path and the ratios ours/nginx; nothing is asserted.

Run: ``python bench/app.py`` (``--seconds 5 --audit all|writes|none``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bastion.testing.app_rig import DOMAIN, AppRig, start_app_rig
from bastion.testing.peers.ports import free_port

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
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
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else 0.0,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-app-"))
    results: dict[str, Any] = {}
    async with start_app_rig(tmp, audit_requests=args.audit) as rig:
        hosts = tmp / "hosts"
        hosts.write_text(
            Path("/etc/hosts").read_text() + f"\n127.0.0.1 {DOMAIN} grafana.{DOMAIN}\n"
        )
        results["direct"] = await asyncio.to_thread(
            _wrk, f"http://127.0.0.1:{rig.app_port}/hello", args.seconds, None, []
        )
        if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
            results["nginx"] = await _nginx(rig, tmp, hosts, args.seconds)
        token = await rig.cookie(rig.alice, "grafana")
        results["ours"] = await asyncio.to_thread(
            _wrk,
            rig.url("grafana", "/hello"),
            args.seconds,
            hosts,
            ["-H", f"Cookie: __Host-bastion_app_session={token}"],
        )
    if "nginx" in results and results["nginx"]["rps"]:
        results["ours_vs_nginx_rps"] = round(results["ours"]["rps"] / results["nginx"]["rps"], 2)
        nginx_p99 = results["nginx"]["p99_ms"] or 1e-9
        results["ours_vs_nginx_p99"] = round(results["ours"]["p99_ms"] / nginx_p99, 2)
    results["ours_vs_direct_rps"] = round(
        results["ours"]["rps"] / (results["direct"]["rps"] or 1e-9), 2
    )
    results["audit_requests"] = args.audit
    return results


async def _nginx(rig: AppRig, tmp: Path, hosts: Path, seconds: int) -> dict[str, float]:
    port = free_port()
    conf = tmp / "nginx.conf"
    crt, key = rig.tls_files
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp, app_port=rig.app_port, port=port, domain=DOMAIN, crt=crt, key=key
        )
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"])
    try:
        await asyncio.sleep(0.5)
        return await asyncio.to_thread(
            _wrk, f"https://grafana.{DOMAIN}:{port}/hello", seconds, hosts, []
        )
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--audit", choices=["all", "writes", "none"], default="all")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
