import stat

import pytest

from bastion.files import write_private_file


def test_private_file_mode_and_atomic_replace(tmp_path):
    path = tmp_path / "d" / "key"
    write_private_file(path, "one")
    write_private_file(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "d" / "key.tmp").exists()


def test_durable_file_is_fsynced_file_and_directory(tmp_path, monkeypatch):
    import os

    from bastion.files import write_durable_file

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    write_durable_file(tmp_path / "s" / "cursor", "7\n")
    assert (tmp_path / "s" / "cursor").read_text() == "7\n"
    assert len(synced) == 2  # the file's bytes, then the directory entry of the rename
    assert stat.S_IMODE((tmp_path / "s" / "cursor").stat().st_mode) == 0o600


def test_existing_wide_file_becomes_private(tmp_path):
    path = tmp_path / "rec.cast"
    path.write_text("old")
    path.chmod(0o644)
    write_private_file(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_stale_temporary_file_with_a_wide_mode_is_not_reused(tmp_path):
    # a leftover (or planted) world-readable temporary file must not carry its mode over
    stale = tmp_path / "key.tmp"
    stale.write_text("planted")
    stale.chmod(0o666)
    write_private_file(tmp_path / "key", "secret")
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert stale.read_text() == "planted"  # not written through


def test_symlink_at_the_path_is_replaced_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / "out"
    link.symlink_to(target)
    write_private_file(link, "data")
    assert not link.is_symlink() and link.read_text() == "data"
    assert target.read_text() == "keep"


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import os

    import pytest

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_private_file(tmp_path / "key", "secret")
    assert list(tmp_path.iterdir()) == []


def test_files_created_private_whatever_the_umask(tmp_path):
    import os

    old = os.umask(0)
    try:
        write_private_file(tmp_path / "d" / "key", "secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d" / "key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700


def test_synced_file_fsyncs_the_bytes_not_the_directory(tmp_path, monkeypatch):
    import os

    from bastion.files import write_synced_file

    path = tmp_path / "meta.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_synced_file(path, "new")
    assert synced == [False]  # the file only: the caller fsyncs the directory once
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_synced_file(path, "newer")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["meta.json"]
