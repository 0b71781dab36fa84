from __future__ import annotations

import json
from pathlib import Path

import pytest
from exportkit import make_event

from bastion.errors import BadParameter, ConnectionProblem
from bastion.export.file_output import FileOutput, rotated_names


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


async def test_appends_json_lines(tmp_path: Path) -> None:
    out = FileOutput(tmp_path / "logs" / "audit.jsonl")
    await out.send([make_event(0), make_event(1)])
    await out.send([make_event(2)])
    await out.close()
    await FileOutput(tmp_path / "logs" / "audit.jsonl").send([make_event(3)])
    assert _ids(tmp_path / "logs" / "audit.jsonl") == [make_event(n).id for n in range(4)]


async def test_rotation_by_size_keeps_n_files_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    line = len(b"".join([make_event(0).model_dump_json().encode()]))
    out = FileOutput(path, max_bytes=3 * line, keep=2)
    for n in range(0, 12, 2):
        await out.send([make_event(n), make_event(n + 1)])
    await out.close()
    names = rotated_names(path, 2)
    assert not path.with_name("audit.jsonl.3").exists()
    # Each file holds whole batches and stays under the limit.
    kept = _ids(names[1]) + _ids(names[0]) + _ids(path)
    assert kept == [make_event(n).id for n in range(6, 12)]
    for file in (path, *names):
        assert file.stat().st_size <= 3 * line + 10
        assert file.stat().st_mode & 0o777 == 0o600


async def test_batch_larger_than_limit_still_written(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    out = FileOutput(path, max_bytes=10, keep=1)
    await out.send([make_event(0), make_event(1)])
    await out.send([make_event(2)])
    await out.close()
    assert _ids(rotated_names(path, 1)[0]) == [make_event(0).id, make_event(1).id]
    assert _ids(path) == [make_event(2).id]


async def test_keep_zero_discards_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    out = FileOutput(path, max_bytes=10, keep=0)
    await out.send([make_event(0)])
    await out.send([make_event(1)])
    assert _ids(path) == [make_event(1).id]
    assert list(tmp_path.iterdir()) == [path]


async def test_unwritable_is_connection_problem(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = FileOutput(blocker / "audit.jsonl")
    with pytest.raises(ConnectionProblem, match="cannot write"):
        await out.send([make_event(0)])


def test_bad_limits() -> None:
    with pytest.raises(BadParameter):
        FileOutput(Path("x"), max_bytes=0)
    with pytest.raises(BadParameter):
        FileOutput(Path("x"), keep=-1)
