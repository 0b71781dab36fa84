from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.errors import BadParameter
from bastion.export.cursor import FileCursor


async def test_missing_file_starts_at_zero(tmp_path: Path) -> None:
    assert await FileCursor(tmp_path / "c").load() == 0


async def test_save_then_load_survives_a_new_instance(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.cursor"
    await FileCursor(path).save(42)
    assert await FileCursor(path).load() == 42
    assert json.loads(path.read_text()) == {"next_index": 42}
    assert path.stat().st_mode & 0o777 == 0o600
    assert not path.with_name("out.cursor.tmp").exists()


async def test_save_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "c"
    cursor = FileCursor(path)
    await cursor.save(1)
    inode = path.stat().st_ino
    await cursor.save(2)
    assert path.stat().st_ino != inode  # renamed over, never rewritten in place
    assert await cursor.load() == 2


@pytest.mark.parametrize(
    "text", ["", "{", '{"next_index": -1}', '{"next_index": "3"}', "[]", '{"next_index": true}']
)
async def test_corrupt_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c"
    path.write_text(text)
    with pytest.raises(BadParameter, match="corrupt"):
        await FileCursor(path).load()


async def test_negative_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await FileCursor(tmp_path / "c").save(-1)


async def test_one_exporter_per_cursor(tmp_path: Path) -> None:
    path = tmp_path / "c"
    first = FileCursor(path)
    await first.save(5)
    assert await first.load() == 5
    with pytest.raises(BadParameter, match="in use by another exporter"):
        await FileCursor(path).load()
    await first.close()
    second = FileCursor(path)
    assert await second.load() == 5
    await second.close()


async def test_peek_and_in_use_do_not_take_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "c"
    observer = FileCursor(path)
    assert not observer.in_use()
    assert await observer.peek() == 0
    running = FileCursor(path)
    await running.save(9)
    await running.load()
    assert observer.in_use()
    assert await observer.peek() == 9
    await running.close()
    assert not observer.in_use()
    assert await running.load() == 9  # the observer did not leave a lock behind
    await running.close()
