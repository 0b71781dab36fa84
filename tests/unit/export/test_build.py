from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from exportkit import ListSource, make_event

from bastion.config.export import AuditExportConfig
from bastion.errors import BadParameter
from bastion.export.build import build_forwarders, build_output, run_forwarders
from bastion.export.file_output import FileOutput
from bastion.export.http_output import HttpOutput
from bastion.export.syslog_output import SyslogOutput
from bastion.testing.peers.export import make_pki


def parse(*outputs: dict[str, Any]) -> AuditExportConfig:
    return AuditExportConfig.model_validate({"outputs": list(outputs), "retry_max": "10s"})


def test_outputs_and_cursor_paths(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    cfg = parse(
        {"type": "file", "path": str(tmp_path / "a.jsonl"), "max_bytes": 1000, "keep": 3},
        {
            "type": "syslog",
            "name": "siem",
            "addr": "127.0.0.1",
            "tls": True,
            "ca_file": str(pki.ca),
            "cert_file": str(pki.client_cert),
            "key_file": str(pki.client_key),
            "cursor_file": str(tmp_path / "siem.pos"),
        },
        {"type": "splunk_hec", "url": "https://s:8088/services/collector/event", "token": "t"},
        {"type": "elasticsearch", "url": "http://e:9200/_bulk", "ca_file": str(pki.ca)},
    )
    fwds = build_forwarders(cfg, ListSource(), tmp_path / "data")
    file_out, syslog_out, hec_out, es_out = (f.output for f in fwds)
    assert isinstance(file_out, FileOutput) and file_out.keep == 3 and file_out.max_bytes == 1000
    assert isinstance(syslog_out, SyslogOutput)
    assert (syslog_out.port, syslog_out.tls is not None, syslog_out.name) == (6514, True, "siem")
    assert isinstance(hec_out, HttpOutput) and hec_out.headers == {"Authorization": "Splunk t"}
    assert isinstance(es_out, HttpOutput) and es_out.index == "bastion-audit"
    cursors = [f.cursor.path for f in fwds]  # type: ignore[attr-defined]
    assert cursors == [
        tmp_path / "data" / "audit-export" / "file.cursor",
        tmp_path / "siem.pos",
        tmp_path / "data" / "audit-export" / "splunk_hec.cursor",
        tmp_path / "data" / "audit-export" / "elasticsearch.cursor",
    ]
    assert fwds[0].backoff_cap == 10


def test_missing_tls_file_is_bad_parameter(tmp_path: Path) -> None:
    cfg = parse({"type": "syslog", "addr": "s", "tls": True, "ca_file": str(tmp_path / "no.pem")})
    with pytest.raises(BadParameter, match="TLS files"):
        build_output(cfg.outputs[0])
    cfg = parse({"type": "elasticsearch", "url": "http://e/_bulk", "ca_file": str(tmp_path)})
    with pytest.raises(BadParameter, match="CA file"):
        build_output(cfg.outputs[0])


async def test_run_forwarders_runs_each(tmp_path: Path) -> None:
    cfg = parse(
        {"type": "file", "path": str(tmp_path / "a.jsonl")},
        {"type": "file", "name": "b", "path": str(tmp_path / "b.jsonl")},
    )
    fwds = build_forwarders(cfg, ListSource([make_event(0), make_event(1)]), tmp_path)
    task = asyncio.ensure_future(run_forwarders(fwds))
    async with asyncio.timeout(5):
        while not all(f.status.next_index == 2 for f in fwds):
            await asyncio.sleep(0)  # yield; no real time passes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for name in ("a.jsonl", "b.jsonl"):
        assert len((tmp_path / name).read_text().splitlines()) == 2
