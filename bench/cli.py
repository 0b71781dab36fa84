"""CLI benchmark (issue 12): start-up of ``bsh`` and the speed of ``bsh ssh``, next to the
interpreter's floor and OpenSSH, measured in one run.

Run with ``python bench/cli.py`` (a few minutes) or ``--quick`` (used by the smoke test).

Every measurement is interleaved: each round runs every command once, in turn, and the median
of the rounds is reported (:func:`interleaved`), so ours and the peers see the same load on a
shared machine. Everything is measured once the cluster is up.

Start-up (median wall time of N rounds after one warm-up round):

* ``python -c pass`` (the floor), ``python -c 'import click'``, ``ssh -V``,
* ``bsh --help``, ``bsh status``, ``bsh ls`` (one API call to the proxy),

SSH to the built-in node (median of N rounds of ``true``; median MB/s of 3 runs of 256 MiB
piped to ``cat``):

* ``openssh ProxyJump``  ``ssh -J`` through a second sshd (the peer),
* ``ssh+bsh``            real ``ssh`` with ``ProxyCommand bsh proxy ssh`` (``bsh config``),
* ``bsh ssh``            the user's main command.

Where ``bsh ssh``'s time goes (start-up of the two Python processes of the hand-off, next to
the floor): ``import ssh_handoff`` (``bsh ssh`` before it asks the session challenge and execs
``ssh``) and ``import proxy_fast`` (the ProxyCommand ``bsh proxy ssh`` OpenSSH starts); the
difference between ``bsh ssh`` and ``ssh+bsh`` is the hand-off (its start-up plus the challenge).

The ``bastion`` package is byte-compiled first (``compileall``), as an installed package is:
this sandbox sets ``PYTHONDONTWRITEBYTECODE``, under which every run of a module without a
``.pyc`` would compile it again and measure the compiler instead of the CLI.

Targets (issue 12): ``bsh --help`` and ``bsh status`` within 6x ``python -c pass``; ``bsh ssh``
connect at most 1.0x ProxyJump, throughput at least 1.0x ProxyJump. Every process started is
stopped by PID at the end. ``--json PATH`` also writes the results. Exit status: 0 when every
measurement was taken (targets missed or not), 1 when some were skipped, 2 when set-up failed.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "ssh"))

from cluster import BIN, BastionCluster, start_cluster  # noqa: E402
from measure import CMD_TIMEOUT, Skipped, throughput  # noqa: E402
from openssh import OpenSSHPeers, start_peers  # noqa: E402

import bastion  # noqa: E402
from bastion.testing.peers.sshd import SshdUnavailable, find_ssh_binary  # noqa: E402

TARGET_STARTUP = 6.0
TARGET_CONNECT = 1.0
TARGET_THROUGHPUT = 1.0


@dataclass
class Result:
    startup_ms: dict[str, float] = field(default_factory=dict)
    connect_ms: dict[str, float] = field(default_factory=dict)
    mbps: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def run_ms(argv: list[str], env: Mapping[str, str], ok: tuple[int, ...] = (0,)) -> float:
    """Wall milliseconds of one run of ``argv``.

    Raises:
        Skipped: an exit status not in ``ok`` (with the end of its stderr).
    """
    start = time.perf_counter()
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=dict(env),
        timeout=CMD_TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in ok:
        raise Skipped(f"exit {done.returncode}: {done.stderr.decode()[-300:].strip()}")
    return elapsed * 1000


def interleaved(
    result: Result,
    table: dict[str, float],
    cases: dict[str, Callable[[], float]],
    rounds: int,
    warm_up: bool = True,
) -> None:
    """Median of each case over ``rounds`` rounds (after one warm-up round), into ``table``.

    Every round runs each case once, in turn, so ours and the peers see the same load (this
    2-core machine is shared): a ratio compares runs taken seconds apart, not minutes. A case
    that fails once is reported in ``result.skipped`` and not run again.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    failed: set[str] = set()
    total = rounds + int(warm_up)
    for i in range(total):
        print(f"  round {i + 1}/{total}: {', '.join(cases)}", file=sys.stderr, flush=True)
        for name, case in cases.items():
            if name in failed:
                continue
            try:
                value = case()
            except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
                text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                result.skipped.append(f"{name}: {text}")
                failed.add(name)
                continue
            if i or not warm_up:
                samples[name].append(value)
    for name, values in samples.items():
        if values and name not in failed:
            table[name] = statistics.median(values)


def measure(args: argparse.Namespace, work: Path) -> Result:
    result = Result()
    env = dict(os.environ)
    py = sys.executable
    bsh = str(BIN / "bsh")
    peers: OpenSSHPeers | None = None
    cluster: BastionCluster | None = None
    try:
        try:
            find_ssh_binary("ssh")
            peers = start_peers(work / "openssh")
        except (SshdUnavailable, RuntimeError) as exc:
            result.skipped.append(f"OpenSSH peers: {exc}")
        cluster = start_cluster(work / "bastion")
        cluster.create_user()
        cluster.wait_for_node(cluster.node_name)
        cenv = cluster.env()
        print("measuring start-up ...", file=sys.stderr, flush=True)
        starts: dict[str, tuple[list[str], tuple[int, ...]]] = {
            "python -c pass": ([py, "-c", "pass"], (0,)),
            "python -c 'import click'": ([py, "-c", "import click"], (0,)),
            "ssh -V": (["ssh", "-V"], (0,)),
            "bsh --help": ([bsh, "--help"], (0,)),
            "bsh status": ([bsh, "status"], (0,)),
            "bsh ls": ([bsh, "ls"], (0,)),
            "import ssh_handoff": ([py, "-c", "import bastion.cli.ssh_handoff"], (0,)),
            "import proxy_fast": ([py, "-c", "import bastion.cli.proxy_fast"], (0,)),
        }
        interleaved(
            result,
            result.startup_ms,
            {n: functools.partial(run_ms, a, cenv, ok) for n, (a, ok) in starts.items()},
            args.runs,
        )
        paths: dict[str, tuple[list[str], Mapping[str, str]]] = {
            "bsh ssh": ([bsh, "ssh", f"{cluster.login}@{cluster.node_name}"], cenv),
            "ssh+bsh": (
                ["ssh", "-F", str(cluster.ssh_config()),
                 f"{cluster.login}@{cluster.node_name}.{cluster.name}"],
                cenv,
            ),
        }  # fmt: skip
        if peers is not None:
            paths = {"openssh ProxyJump": (peers.argv("viajump"), env), **paths}
        print("measuring connect (true) ...", file=sys.stderr, flush=True)
        interleaved(
            result,
            result.connect_ms,
            {
                f"{n} true": functools.partial(run_ms, [*a, "true"], e)
                for n, (a, e) in paths.items()
            },
            args.runs,
        )
        print(f"measuring throughput ({args.bytes >> 20} MiB) ...", file=sys.stderr, flush=True)
        interleaved(
            result,
            result.mbps,
            {
                f"{n} {args.bytes >> 20} MiB": functools.partial(throughput, a, e, args.bytes)
                for n, (a, e) in paths.items()
            },
            args.carry_runs,
            warm_up=False,
        )
    finally:
        if cluster is not None:
            cluster.stop()
        if peers is not None:
            peers.stop()
    return result


def _ratio(num: float | None, den: float | None) -> str:
    return "     -" if num is None or not den else f"{num / den:6.2f}x"


def report(result: Result, args: argparse.Namespace) -> None:
    floor = result.startup_ms.get("python -c pass")
    print(
        f"\nCLI benchmark: medians of {args.runs} interleaved runs; throughput: median of "
        f"{args.carry_runs} runs of {args.bytes >> 20} MiB"
    )
    print(f"{'start-up':<28} {'ms':>9}  {'vs python -c pass':>17}")
    for name, ms in result.startup_ms.items():
        print(f"{name:<28} {ms:9.1f}  {_ratio(ms, floor):>17}")
    mib = args.bytes >> 20
    jump_ms = result.connect_ms.get("openssh ProxyJump true")
    jump_mbps = result.mbps.get(f"openssh ProxyJump {mib} MiB")
    print(f"\n{'to the built-in node':<28} {'true ms':>9} {'MB/s':>8}  vs ProxyJump: time  MB/s")
    for name in ("openssh ProxyJump", "ssh+bsh", "bsh ssh"):
        ms, mbps = result.connect_ms.get(f"{name} true"), result.mbps.get(f"{name} {mib} MiB")
        shown_ms = "skipped" if ms is None else f"{ms:.1f}"
        shown_mbps = "skipped" if mbps is None else f"{mbps:.1f}"
        print(f"{name:<28} {shown_ms:>9} {shown_mbps:>8}  "
              f"{_ratio(ms, jump_ms):>17} {_ratio(mbps, jump_mbps)}")  # fmt: skip
    handoff, plain = result.connect_ms.get("bsh ssh true"), result.connect_ms.get("ssh+bsh true")
    if handoff is not None and plain is not None:
        print(f"{'bsh ssh hand-off overhead':<28} {handoff - plain:9.1f}  (bsh ssh - ssh+bsh)")
    print("\nTargets (issue 12):")
    su, cm = result.startup_ms, result.connect_ms
    checks = [
        ("bsh --help / python -c pass", su.get("bsh --help"), floor, TARGET_STARTUP, "<="),
        ("bsh status / python -c pass", su.get("bsh status"), floor, TARGET_STARTUP, "<="),
        ("bsh ssh connect / ProxyJump", cm.get("bsh ssh true"), jump_ms, TARGET_CONNECT, "<="),
        ("bsh ssh throughput / ProxyJump", result.mbps.get(f"bsh ssh {mib} MiB"), jump_mbps,
         TARGET_THROUGHPUT, ">="),
    ]  # fmt: skip
    for name, num, den, target, op in checks:
        if num is None or not den:
            print(f"  {name:<34} skipped")
            continue
        value = num / den
        ok = value <= target if op == "<=" else value >= target
        print(f"  {name:<34} {value:6.2f}  (target {op} {target})  {'OK' if ok else 'MISSED'}")
    if result.skipped:
        print("\nSkipped measurements:")
        for line in result.skipped:
            print(f"  - {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few runs, 16 MiB (smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (15)")
    parser.add_argument("--bytes", type=int, default=None, help="bytes piped (256 MiB)")
    parser.add_argument(
        "--carry-runs", type=int, default=None, help="throughput runs per path, median (3)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    args.runs = args.runs or (3 if args.quick else 15)
    args.bytes = args.bytes or (16 * 2**20 if args.quick else 256 * 2**20)
    args.carry_runs = args.carry_runs or (1 if args.quick else 3)
    compileall.compile_dir(Path(bastion.__file__).parent, quiet=2)  # as installed: see above
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    started = time.monotonic()
    try:
        result = measure(args, work)
    except Exception as exc:  # noqa: BLE001
        print(f"set-up failed: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(result, args)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(result.__dict__, indent=2))
    return 1 if result.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
