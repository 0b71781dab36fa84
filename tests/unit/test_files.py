import stat

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
