"""A host identity's files replaced as one: all or none, across a crash before or after the
commit point."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.agent.host_files import COMMIT, STAGE, finish_pending, replace_files


def test_files_are_replaced_all_or_none(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("old key")
    (tmp_path / "tls.crt").write_text("old cert")
    replace_files(tmp_path, {"key": "new key", "tls.crt": "new cert"})
    assert (tmp_path / "key").read_text() == "new key"
    assert (tmp_path / "tls.crt").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / STAGE).exists()
    # a crash before the commit point: the old identity stays whole
    (tmp_path / STAGE).mkdir()
    (tmp_path / STAGE / "key").write_text("half")
    finish_pending(tmp_path)
    assert (tmp_path / "key").read_text() == "new key" and not (tmp_path / STAGE).exists()
    # a crash after it, with one file moved already: the rest is moved on the next load
    (tmp_path / STAGE).mkdir()
    (tmp_path / STAGE / "tls.crt").write_text("third cert")
    (tmp_path / "key").write_text("third key")
    (tmp_path / STAGE / COMMIT).write_text("key\ntls.crt\n")
    finish_pending(tmp_path)
    assert (tmp_path / "tls.crt").read_text() == "third cert"
    assert (tmp_path / "key").read_text() == "third key"


def test_a_bad_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        replace_files(tmp_path, {"../escape": "x"})
