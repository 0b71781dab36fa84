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
