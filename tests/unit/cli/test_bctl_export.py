from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from bastion.audit.log import AuditLog
from bastion.backend import open_backend
from bastion.cli.bctl import main
from bastion.clock import SystemClock


def _emit(db: Path, count: int) -> None:
    async def go() -> None:
        backend = await open_backend("sqlite", path=str(db))
        log = AuditLog(backend, SystemClock(), "c")
        for n in range(count):
            await log.emit("user.login", user=f"u{n}")
        await backend.close()

    asyncio.run(go())


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "audit_export:\n  outputs:\n"
        f"    - type: file\n      name: jsonl\n      path: {tmp_path / 'out' / 'audit.jsonl'}\n"
        f"{extra}"
    )
    return path


def test_once_exports_new_events_only(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "backend.sqlite"
    _emit(db, 3)
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "export", "--config", str(cfg), "--once"])
    assert result.exit_code == 0, result.output
    assert "jsonl: delivered 3 events (next index 3)" in result.output
    _emit(db, 2)
    result = runner.invoke(main, ["-c", str(cfg), "audit", "export", "--once"])
    assert "jsonl: delivered 2 events (next index 5)" in result.output
    lines = (tmp_path / "out" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [0, 1, 2, 3, 4]
    assert (tmp_path / "data" / "audit-export" / "jsonl.cursor").exists()
    _emit(db, 4)
    result = runner.invoke(
        main, ["audit", "export", "--config", str(cfg), "--status", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert (row["output"], row["next_index"], row["log_size"], row["lag"]) == ("jsonl", 5, 9, 4)
    assert row["running"] is False
    text = runner.invoke(main, ["audit", "export", "--config", str(cfg), "--status"]).output
    assert "jsonl" in text and "4" in text


def test_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "export", "--once"])
    assert result.exit_code != 0 and "needs --config FILE" in result.output
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"data_dir: {tmp_path}\n")
    result = runner.invoke(main, ["audit", "export", "--config", str(bare), "--once"])
    assert "has no audit_export: section" in result.output
    cfg = _config(tmp_path)
    result = runner.invoke(
        main, ["audit", "export", "--config", str(cfg), "--once", "--output", "splunk"]
    )
    assert "no audit_export output named splunk (have: jsonl)" in result.output
    result = runner.invoke(main, ["audit", "export", "--config", str(cfg), "--once"])
    assert "no Bastion database at" in result.output
    assert "Traceback" not in result.output
