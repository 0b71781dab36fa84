"""SSH benchmark (issue 4): Bastion's proxy against OpenSSH, measured in the same run.

Run with ``python bench/ssh/run.py`` (about 3-5 minutes) or ``--quick`` (seconds; used by the
smoke test). Paths compared, all on loopback:

* ``openssh direct``      ``ssh`` straight to a stock sshd (the floor),
* ``openssh ProxyJump``   ``ssh -J`` through a second sshd acting as the bastion (the peer),
* ``ssh+bsh -> agentless``  real ``ssh`` with ``ProxyCommand bsh proxy ssh`` (``bsh config``)
  through our proxy to an agentless sshd,
* ``bsh ssh -> agentless``  ``bsh ssh`` (asyncssh client) through our proxy to the same sshd,
* ``ssh+bsh -> built-in`` / ``bsh ssh -> built-in``  the same two clients to our own SSH node
  behind its reverse tunnel.

Metrics: (a) median wall time of ``ssh ... true``; (b) MB/s of ``head -c N /dev/zero | ssh ...
'cat >/dev/null'``; (c) RSS growth of the ``bastion`` daemon (auth + proxy + built-in node in one
process) while it carries N concurrent idle sessions to the agentless sshd (so the daemon holds
only proxy state), per session. Targets (issue 4): throughput >= 0.5x ProxyJump, connect time of
real ssh through our proxy <= 2x ProxyJump, <= 150 KiB proxy memory per idle session.

Every process started is stopped by PID at the end; skipped measurements are printed with the
reason. ``--json PATH`` also writes the results. The exit status is 0 when every measurement was
taken (targets missed or not), 1 when some were skipped, 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from cluster import BIN, BastionCluster, start_cluster  # noqa: E402
from measure import Skipped, command_time, idle_sessions, median_ms, throughput  # noqa: E402
from openssh import SSHD_EXTRA, OpenSSHPeers, start_peers  # noqa: E402

from bastion.testing.peers.sshd import SshdUnavailable, find_ssh_binary  # noqa: E402

TARGET_THROUGHPUT = 0.5
TARGET_CONNECT = 2.0
TARGET_KIB_PER_SESSION = 150.0


@dataclass
class Row:
    name: str
    argv: list[str] | None
    env: dict[str, str] = field(default_factory=dict)
    why_missing: str = ""
    connect_ms: float | None = None
    connect_note: str = ""
    mbps: float | None = None
    mbps_note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return text if isinstance(exc, Skipped) and text else f"{type(exc).__name__}: {text}"


def _measure(report: Report, row: Row, what: str, fn: Callable[[], float]) -> float | None:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        report.skipped.append(f"{row.name}: {what}: {_describe(exc)}")
        return None


def _rows(
    peers: OpenSSHPeers | None, cluster: BastionCluster | None, why: dict[str, str]
) -> list[Row]:
    rows: list[Row] = []
    for name, alias in (("openssh direct", "direct"), ("openssh ProxyJump", "viajump")):
        rows.append(Row(name, peers.argv(alias) if peers else None, why_missing=why["openssh"]))
    if cluster is None:
        for name in ("ssh+bsh -> agentless", "bsh ssh -> agentless", "ssh+bsh -> built-in",
                     "bsh ssh -> built-in"):  # fmt: skip
            rows.append(Row(name, None, why_missing=why["bastion"]))
        return rows
    config = cluster.ssh_config()
    env = cluster.env()
    bsh = str(BIN / "bsh")
    for label, node in (("agentless", "agentless"), ("built-in", cluster.node_name)):
        rows.append(
            Row(
                f"ssh+bsh -> {label}",
                ["ssh", "-F", str(config), f"{cluster.login}@{node}.{cluster.name}"],
                env,
            )
        )
        rows.append(Row(f"bsh ssh -> {label}", [bsh, "ssh", f"{cluster.login}@{node}"], env))
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "skipped" if value is None else format(value, spec)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def print_report(report: Report, args: argparse.Namespace) -> None:
    print()
    print(f"SSH benchmark: median of {args.runs} runs of `true`; {args.bytes / 2**20:.0f} MiB "
          f"piped to `cat >/dev/null`; {args.sessions} idle sessions")  # fmt: skip
    print(f"{'path':<24} {'true (ms)':>10} {'MB/s':>9}  vs ProxyJump: time  throughput")
    jump = report.row("openssh ProxyJump")
    for row in report.rows:
        t = _ratio(row.connect_ms, jump.connect_ms if jump else None)
        m = _ratio(row.mbps, jump.mbps if jump else None)
        print(
            f"{row.name:<24} {_fmt(row.connect_ms, '10.1f')} {_fmt(row.mbps, '9.1f')}"
            f"  {_fmt(t, '17.2f')}x {_fmt(m, '10.2f')}x"
        )
    mem = report.memory
    if mem:
        retried = mem.get("retried_openings")
        print(
            f"\nproxy RSS with {mem['sessions']} idle sessions to the agentless sshd: "
            f"{mem['before_kib']} KiB -> {mem['after_kib']} KiB = "
            f"{mem['per_session_kib']:.1f} KiB per session"
            + (f" ({retried} openings retried after a connection error)" if retried else "")
        )
    print("\nTargets (issue 4):")
    ours = report.row("ssh+bsh -> agentless")
    verdicts = [
        ("throughput ssh+bsh -> agentless / ProxyJump", _ratio(ours.mbps if ours else None,
         jump.mbps if jump else None), TARGET_THROUGHPUT, ">="),
        ("connect time ssh+bsh -> agentless / ProxyJump", _ratio(
            ours.connect_ms if ours else None, jump.connect_ms if jump else None),
         TARGET_CONNECT, "<="),
        ("proxy KiB per idle session", mem.get("per_session_kib"), TARGET_KIB_PER_SESSION, "<="),
    ]  # fmt: skip
    for name, value, target, op in verdicts:
        if value is None:
            print(f"  {name:<48} skipped")
            continue
        ok = value >= target if op == ">=" else value <= target
        print(f"  {name:<48} {value:8.2f}  (target {op} {target})  {'OK' if ok else 'MISSED'}")
    if report.skipped:
        print("\nSkipped measurements:")
        for line in report.skipped:
            print(f"  - {line}")


def run(args: argparse.Namespace, work: Path) -> Report:
    report = Report()
    why = {"openssh": "", "bastion": ""}
    peers: OpenSSHPeers | None = None
    cluster: BastionCluster | None = None
    try:
        try:
            find_ssh_binary("ssh")
            peers = start_peers(work / "openssh")
        except (SshdUnavailable, RuntimeError) as exc:
            why["openssh"] = why["bastion"] = f"OpenSSH unavailable: {_describe(exc)}"
        if peers is not None:
            try:
                cluster = start_cluster(work / "bastion")
                cluster.create_user()
                cluster.add_agentless("agentless", {"env": "bench"}, SSHD_EXTRA)
                cluster.wait_for_node("agentless")
                cluster.wait_for_node(cluster.node_name)
            except Exception as exc:  # noqa: BLE001
                why["bastion"] = f"Bastion set-up failed: {_describe(exc)}"
                if cluster is not None:
                    print(cluster.log.read_text(errors="replace")[-2000:], file=sys.stderr)
                    cluster.stop()
                cluster = None
        report.rows = _rows(peers, cluster, why)
        _measure_rows(report, args)
        if cluster is not None and args.sessions:
            _measure_memory(report, cluster, args)
        elif args.sessions:
            report.skipped.append(f"idle sessions: {why['bastion']}")
    finally:
        if cluster is not None:
            cluster.stop()
        if peers is not None:
            peers.stop()
    return report


def _measure_rows(report: Report, args: argparse.Namespace) -> None:
    for row in report.rows:
        if row.argv is None:
            report.skipped.append(f"{row.name}: {row.why_missing}")
            continue
        argv, env = row.argv, row.env or dict(os.environ)
        print(f"measuring {row.name} ...", file=sys.stderr, flush=True)
        row.connect_ms = _measure(
            report, row, "connect time",
            functools.partial(lambda a, e: median_ms(command_time(a, e, args.runs)), argv, env),
        )  # fmt: skip
        row.mbps = _measure(
            report, row, "throughput", functools.partial(throughput, argv, env, args.bytes)
        )


def _measure_memory(report: Report, cluster: BastionCluster, args: argparse.Namespace) -> None:
    print(f"opening {args.sessions} idle sessions ...", file=sys.stderr, flush=True)
    try:
        result = idle_sessions(
            cluster.home, "agentless", cluster.login, args.sessions, cluster.pid, args.settle
        )
    except Exception as exc:  # noqa: BLE001
        report.skipped.append(f"idle sessions: {_describe(exc)}")
        return
    report.memory = {
        "sessions": result.sessions,
        "before_kib": result.before_kib,
        "after_kib": result.after_kib,
        "per_session_kib": result.per_session_kib,
        "retried_openings": result.retried,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="runs of `true` per path (15)")
    parser.add_argument("--bytes", type=int, default=None, help="bytes piped (1 GiB)")
    parser.add_argument("--sessions", type=int, default=None, help="idle sessions (200)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.runs = args.runs or (3 if args.quick else 15)
    args.bytes = args.bytes or (16 * 2**20 if args.quick else 2**30)
    args.sessions = args.sessions if args.sessions is not None else (20 if args.quick else 200)
    args.settle = 0.5 if args.quick else 2.0
    work = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    started = time.monotonic()
    try:
        report = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_report(report, args)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [
                        {"name": r.name, "connect_ms": r.connect_ms, "mbps": r.mbps}
                        for r in report.rows
                    ],
                    "memory": report.memory,
                    "skipped": report.skipped,
                },
                indent=2,
            )
        )
    if not report.rows or all(r.argv is None for r in report.rows):
        return 2
    return 1 if report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
