"""Trusted clusters benchmark (issue 23): a leaf node reached through the root versus directly.

Run with ``python bench/trusted.py`` (about a minute) or ``--quick`` (the smoke test). Two
``bastion start`` daemons on loopback (root and leaf, each with its built-in node); the leaf
trusts the root (token, CA pin, ``role_map: ^access$ -> access``). Both paths use the real
OpenSSH client with ``bsh config``:

* ``direct``      ``ssh builtin.LEAF`` with the leaf's own profile: leaf proxy -> leaf node,
* ``via root``    ``ssh builtin.LEAF`` with the root's profile: root proxy -> the leaf's reverse
  tunnel -> leaf proxy -> leaf node, with a leaf certificate fetched over the root.

Metrics: median wall time of ``ssh ... true`` (target: via root <= 1.3x direct) and MB/s of
``head -c N /dev/zero | ssh ... 'cat >/dev/null'`` (256 MiB by default) on both paths.
``--json PATH`` writes the results. Exit status 0: everything measured; 1: a measurement
failed; 2: the set-up failed. Every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent / "ssh"))

from cluster import BastionCluster, start_cluster  # noqa: E402
from measure import Skipped, command_time, median_ms, throughput  # noqa: E402

from bastion.testing.peers.sshd import SshdUnavailable, find_ssh_binary  # noqa: E402

TARGET_CONNECT = 1.3
ROOT, LEAF = "root.bench", "leaf.bench"


def _establish(root: BastionCluster, leaf: BastionCluster) -> None:
    token = json.loads(root.admin("tokens", "add", "--type=trusted_cluster", "--format", "json"))
    spec = (
        "kind: trusted_cluster\n"
        f"metadata: {{name: {ROOT}}}\n"
        "spec:\n"
        f"  proxy_addr: {root.proxy_addr}\n"
        f"  token: '{token['token']}'\n"
        f"  ca_pin: {root.pin}\n"
        '  role_map: [{remote: "^access$", local: [access]}]\n'
    )
    leaf.admin("create", "-f", "-", input=spec)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = root.run("bsh", "clusters", "--format", "json", check=False)
        if done.returncode == 0 and any(c.get("name") == LEAF for c in json.loads(done.stdout)):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{LEAF} did not appear in the root's bsh clusters within 60 s")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ssh = find_ssh_binary("ssh")
    result: dict[str, Any] = {"error": "", "runs": args.runs, "bytes": args.bytes}
    root = start_cluster(work / "root", ROOT)
    leaf: BastionCluster | None = None
    try:
        leaf = start_cluster(work / "leaf", LEAF)
        for cluster in (root, leaf):
            cluster.create_user()
        leaf.wait_for_node(leaf.node_name)
        _establish(root, leaf)
        paths = {"direct": leaf, "via root": root}
        argvs = {
            name: [ssh, "-F", str(c.ssh_config()), f"{c.login}@{leaf.node_name}.{LEAF}"]
            for name, c in paths.items()
        }
        rows: dict[str, dict[str, Any]] = {name: {} for name in argvs}
        samples: dict[str, list[float]] = {name: [] for name in argvs}
        for _ in range(args.runs):  # interleaved: both paths see the same machine load
            for name, argv in argvs.items():
                if "skipped" not in rows[name]:
                    try:
                        samples[name] += command_time(argv, paths[name].env(), 1)
                    except Skipped as exc:
                        rows[name]["skipped"] = str(exc)
        for name, argv in argvs.items():
            row = rows[name]
            if "skipped" not in row:
                row["connect_ms"] = median_ms(samples[name])
                try:
                    row["mb_s"] = throughput(argv, paths[name].env(), args.bytes)
                except Skipped as exc:
                    row["skipped"] = str(exc)
            result[name] = row
    finally:
        if leaf is not None:
            leaf.stop()
        root.stop()
    return result


def _ratio(num: Any, den: Any) -> float | None:
    return num / den if isinstance(num, float) and isinstance(den, float) and den else None


def report(result: dict[str, Any]) -> None:
    mib = result["bytes"] / 2**20
    print(f"Trusted clusters: ssh to a leaf node, {result['runs']} runs, {mib:.0f} MiB")
    print(f"{'path':<10} {'ssh true (ms)':>14} {'MB/s':>10}")
    for name in ("direct", "via root"):
        row = result.get(name, {})
        if "skipped" in row:
            print(f"{name:<10} skipped: {row['skipped']}")
            continue
        print(f"{name:<10} {row.get('connect_ms', 0):>14.0f} {row.get('mb_s', 0):>10.1f}")
    direct, via = result.get("direct", {}), result.get("via root", {})
    connect = _ratio(via.get("connect_ms"), direct.get("connect_ms"))
    speed = _ratio(via.get("mb_s"), direct.get("mb_s"))
    result["connect_ratio"], result["throughput_ratio"] = connect, speed
    if connect is not None:
        verdict = "met" if connect <= TARGET_CONNECT else "MISSED"
        print(f"connect via root / direct: {connect:.2f}x (target <= {TARGET_CONNECT}x: {verdict})")
    if speed is not None:
        print(f"throughput via root / direct: {speed:.2f}x")
    print("Target (issue 23): the extra hop through the root costs at most 1.3x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs, 8 MiB (the smoke test)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--bytes", type=int, default=256 * 2**20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.bytes = 3, 8 * 2**20
    work = Path(tempfile.mkdtemp(prefix="bench-trusted-"))
    code = 0
    try:
        result = run(args, work)
    except (RuntimeError, OSError, SshdUnavailable) as exc:
        result = {"error": str(exc), "runs": args.runs, "bytes": args.bytes}
        print(f"set-up failed: {exc}", file=sys.stderr)
        code = 2
    else:
        report(result)
        if any("skipped" in result.get(n, {}) for n in ("direct", "via root")):
            code = 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
