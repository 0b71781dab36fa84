"""Audit export against real receivers: rsyslog (TCP, TLS with both of Debian's netstream
drivers), an HTTP receiver (HEC and _bulk) that fails for a while, and the daemon itself.

The log is the real AuditLog on SQLite. "No gap" means every index 0..n-1 reaches the receiver
at least once and in order of first arrival; the persisted cursor ends at n.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import BIN, free_port, start_cluster

from bastion.audit.log import AuditLog
from bastion.backend import open_backend
from bastion.clock import SystemClock
from bastion.errors import ConnectionProblem
from bastion.export.cursor import FileCursor
from bastion.export.forwarder import Forwarder
from bastion.export.http_output import HttpOutput, auth_headers
from bastion.export.syslog_output import SyslogOutput, tls_client_context
from bastion.testing import missing_peer, require_binary
from bastion.testing.peers.export import HttpReceiver, Pki, make_pki

pytestmark = pytest.mark.integration

TEMPLATE = (
    "%syslogfacility%|%syslogseverity%|%hostname%|%app-name%|%msgid%"
    "|%timereported:::date-rfc3339%|%$!rfc5424-sd%|%msg%\\n"
)


@dataclass
class Rsyslog:
    """rsyslogd in the foreground on a loopback port, writing parsed fields to ``out``."""

    workdir: Path
    port: int
    out: Path
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = _rsyslog_binary()
        log = (self.workdir / "rsyslogd.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, "-n", "-f", str(self.conf), "-i", str(self.workdir / "rsyslogd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"rsyslogd exited: {(self.workdir / 'rsyslogd.log').read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail("rsyslogd did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        self.proc = None

    def records(self) -> list[tuple[str, ...]]:
        if not self.out.exists():
            return []
        return [tuple(line.split("|", 7)) for line in self.out.read_text().splitlines()]


def _rsyslog_binary() -> str:
    if os.path.exists("/usr/sbin/rsyslogd"):
        return "/usr/sbin/rsyslogd"
    return require_binary("rsyslogd")


def make_rsyslog(workdir: Path, tls: tuple[str, Pki] | None = None) -> Rsyslog:
    _rsyslog_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    out = workdir / "received.log"
    lines = [f'global(workDirectory="{workdir}" maxMessageSize="64k"']
    if tls is None:
        lines[0] += ")"
        lines.append('module(load="imtcp")')
    else:
        driver, pki = tls
        if not list(Path("/usr/lib").glob(f"*/rsyslog/lmnsd_{driver}.so")):
            missing_peer(f"rsyslog {driver} netstream driver (package rsyslog-{driver}) missing")
        lines[0] += (
            f' DefaultNetstreamDriverCAFile="{pki.ca}"'
            f' DefaultNetstreamDriverCertFile="{pki.server_cert}"'
            f' DefaultNetstreamDriverKeyFile="{pki.server_key}")'
        )
        lines.append(
            f'module(load="imtcp" StreamDriver.Name="{driver}" StreamDriver.Mode="1"'
            ' StreamDriver.AuthMode="x509/name" PermittedPeer=["bastion-exporter"])'
        )
    lines += [
        'module(load="mmpstrucdata")',
        f'input(type="imtcp" port="{port}" address="127.0.0.1")',
        f'template(name="fields" type="string" string="{TEMPLATE}")',
        'action(type="mmpstrucdata")',
        f'action(type="omfile" file="{out}" template="fields")',
    ]
    conf = workdir / "rsyslog.conf"
    conf.write_text("\n".join(lines) + "\n")
    return Rsyslog(workdir=workdir, port=port, out=out, conf=conf)


@pytest.fixture
def rsyslog_tcp(tmp_path: Path) -> Iterator[Rsyslog]:
    server = make_rsyslog(tmp_path / "rsyslog")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def audit_log(tmp_path: Path) -> AsyncIterator[AuditLog]:
    backend = await open_backend("sqlite", path=str(tmp_path / "backend.sqlite"))
    yield AuditLog(backend, SystemClock(), "export.test")
    await backend.close()


async def emit(log: AuditLog, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        if n % 5 == 4:
            await log.emit("access.denied", outcome="failure", user=f'u{n} "x"]\\', reason="no")
        else:
            await log.emit("user.login", user=f"user{n}", remote_addr="127.0.0.1")


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def forwarder(log: AuditLog, output: object, cursor: Path, batch: int = 7) -> Forwarder:
    return Forwarder(
        source=log,
        output=output,  # type: ignore[arg-type]
        cursor=FileCursor(cursor),
        batch_size=batch,
        poll_interval=0.02,
        backoff_base=0.02,
        backoff_cap=0.1,
    )


def assert_no_gap(indexes: list[int], total: int, ordered: bool = True) -> None:
    """Every index below ``total`` arrived (and, when ``ordered``, first arrivals are in order)."""
    assert set(indexes) == set(range(total)), f"missing {set(range(total)) - set(indexes)}"
    if ordered:
        assert list(dict.fromkeys(indexes)) == list(range(total))


def check_syslog_records(records: list[tuple[str, ...]], total: int) -> None:
    assert_no_gap([int(json.loads(r[7])["index"]) for r in records], total)
    for facility, severity, host, app, msgid, stamp, sd, msg in records:
        event = json.loads(msg)
        params = json.loads(sd)["bastion@32473"]
        assert (facility, host, app, msgid) == ("10", "auth-1", "bastion", event["type"])
        assert severity == ("6" if event["outcome"] == "success" else "4")
        assert params["id"] == event["id"] and params["code"] == event["code"]
        assert params["user"] == event["user"]  # escaping survived rsyslog's SD parser
        assert params["index"] == str(event["index"])
        assert stamp.startswith(event["time"][:19])


async def test_rsyslog_tcp_receives_parsed_events(
    rsyslog_tcp: Rsyslog, audit_log: AuditLog, tmp_path: Path
) -> None:
    await emit(audit_log, 23)
    out = SyslogOutput("127.0.0.1", rsyslog_tcp.port, hostname="auth-1")
    fwd = forwarder(audit_log, out, tmp_path / "c")
    assert await fwd.run_once() == 23
    await until(lambda: len(rsyslog_tcp.records()) >= 23)
    check_syslog_records(rsyslog_tcp.records(), 23)


@pytest.mark.parametrize("driver", ["ossl", "gtls"])
async def test_rsyslog_tls_with_client_certificate(
    driver: str, audit_log: AuditLog, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    server = make_rsyslog(tmp_path / "rsyslog", tls=(driver, pki))
    server.start()
    try:
        await emit(audit_log, 12)
        # Without a client certificate the receiver refuses us and nothing counts as sent.
        anonymous = SyslogOutput(
            "127.0.0.1", server.port, tls=tls_client_context(str(pki.ca)), server_name="localhost"
        )
        fwd = forwarder(audit_log, anonymous, tmp_path / "c")
        with pytest.raises(ConnectionProblem, match="refused|closed|certificate"):
            await fwd.run_once(max_attempts=2)
        assert not (tmp_path / "c").exists()  # no cursor moved
        ctx = tls_client_context(str(pki.ca), str(pki.client_cert), str(pki.client_key))
        out = SyslogOutput(
            "127.0.0.1", server.port, tls=ctx, server_name="localhost", hostname="auth-1"
        )
        assert await forwarder(audit_log, out, tmp_path / "c").run_once() == 12
        await until(lambda: len(server.records()) >= 12)
        check_syslog_records(server.records(), 12)
    finally:
        server.stop()


async def test_rsyslog_outage_and_restart_leave_no_gap(
    rsyslog_tcp: Rsyslog, audit_log: AuditLog, tmp_path: Path
) -> None:
    await emit(audit_log, 10)
    out = SyslogOutput("127.0.0.1", rsyslog_tcp.port, hostname="auth-1", timeout=2)
    fwd = forwarder(audit_log, out, tmp_path / "c")
    task = asyncio.ensure_future(fwd.run())
    try:
        await until(lambda: fwd.status.next_index == 10)
        rsyslog_tcp.stop()
        await emit(audit_log, 15, start=10)
        await until(lambda: fwd.status.attempts >= 2)  # refused, retrying
        assert fwd.status.next_index == 10
        rsyslog_tcp.start()
        await until(lambda: fwd.status.next_index == 25)
        await until(lambda: len(rsyslog_tcp.records()) >= 25)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    check_syslog_records(rsyslog_tcp.records(), 25)


@pytest.mark.parametrize("kind", ["splunk_hec", "elasticsearch"])
async def test_http_outage_and_forwarder_restart_leave_no_gap(
    kind: str, audit_log: AuditLog, tmp_path: Path
) -> None:
    receiver = HttpReceiver()
    await receiver.start()
    path = "/services/collector/event" if kind == "splunk_hec" else "/_bulk"

    def output() -> HttpOutput:
        headers = auth_headers(kind, token=receiver.token) if kind == "splunk_hec" else {}
        return HttpOutput(receiver.url + path, kind, headers=headers, timeout=2)  # type: ignore[arg-type]

    cursor = tmp_path / "export.cursor"
    await emit(audit_log, 40)
    first = forwarder(audit_log, output(), cursor)
    task = asyncio.ensure_future(first.run())
    writer = asyncio.ensure_future(emit(audit_log, 160, start=40))
    try:
        await until(lambda: first.status.next_index >= 20)
        receiver.fail_status = 500  # the receiver answers errors ...
        await until(lambda: first.status.attempts >= 3)
        failed_at = first.status.next_index
        receiver.fail_status = 0
        await until(lambda: first.status.next_index > failed_at)  # recovered
        await receiver.stop()  # ... then refuses connections
        await writer
        await emit(audit_log, 10, start=200)
        await until(lambda: first.status.attempts >= 3)
        assert "receiver" in first.status.last_error
        task.cancel()  # and the forwarder restarts meanwhile
        await asyncio.gather(task, return_exceptions=True)
        stopped_at = json.loads(cursor.read_text())["next_index"]
        await receiver.start()  # same port
        if kind == "elasticsearch":
            receiver.reject_ids = {e.id for e in await audit_log.read_from(stopped_at + 2, 1)}
        second = forwarder(audit_log, output(), cursor)
        task = asyncio.ensure_future(second.run())
        if kind == "elasticsearch":
            await until(lambda: second.status.attempts >= 2)  # per-item error: retried
            assert second.status.next_index == stopped_at
            receiver.reject_ids = set()
        await until(lambda: second.status.next_index == 210)
    finally:
        task.cancel()
        writer.cancel()
        await asyncio.gather(task, writer, return_exceptions=True)
        await receiver.stop()
    assert receiver.refused >= 3
    indexes = [int(d["index"]) for d in receiver.documents]
    # A _bulk batch with a rejected item is stored in part, then re-sent whole: arrival order
    # is not index order, but the _id (event id) makes the re-sent documents overwrite.
    assert_no_gap(indexes, 210, ordered=kind == "splunk_hec")
    assert len({d["id"] for d in receiver.documents}) == 210
    assert json.loads(cursor.read_text())["next_index"] == 210
    # At-least-once: only a batch whose acknowledgement was lost may repeat.
    assert len(indexes) - 210 <= 2 * 7


def test_daemon_exports_its_own_audit_log(tmp_path: Path) -> None:
    out = tmp_path / "export" / "audit.jsonl"
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "audit_export:\n"
        "  poll_interval: 100ms\n"
        "  outputs:\n"
        f"    - type: file\n      path: {out}\n"
        "      max_bytes: 1500\n      keep: 50\n      batch_size: 2\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    cluster = start_cluster(work, "--config", str(cfg), name="export.test")
    try:
        data = ["--data-dir", str(cluster.data_dir)]
        for n in range(3):
            subprocess.run(
                [str(BIN / "bctl"), *data, "users", "add", f"exp{n}", "--roles", "access"],
                check=True,
                capture_output=True,
                timeout=60,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "exp2" not in _exported_users(out):
            time.sleep(0.1)
        assert "exp2" in _exported_users(out), cluster.output()[-2000:]
    finally:
        cluster.stop()
    indexes = _exported_indexes(out)
    assert_no_gap(indexes, max(indexes) + 1)
    assert out.with_name("audit.jsonl.1").exists()  # rotated on the way
    cursor = cluster.data_dir / "audit-export" / "file.cursor"
    assert json.loads(cursor.read_text())["next_index"] == max(indexes) + 1
    # A restarted daemon continues from the cursor: nothing is exported twice.
    cluster = start_cluster(work, "--config", str(cfg), name="export.test")
    try:
        subprocess.run(
            [
                str(BIN / "bctl"),
                "--data-dir",
                str(cluster.data_dir),
                "users",
                "add",
                "exp9",
                "--roles",
                "access",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "exp9" not in _exported_users(out):
            time.sleep(0.1)
    finally:
        cluster.stop()
    again = _exported_indexes(out)
    assert_no_gap(again, max(again) + 1)
    assert len(again) == len(set(again))


def _exported(out: Path) -> list[dict[str, object]]:
    files = sorted(
        out.parent.glob(out.name + "*"),
        key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
    )
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def _exported_indexes(out: Path) -> list[int]:
    return [int(str(e["index"])) for e in _exported(out)]


def _exported_users(out: Path) -> str:
    if not out.parent.exists():
        return ""
    return " ".join(str(e.get("target", "")) + " " + str(e.get("user", "")) for e in _exported(out))
