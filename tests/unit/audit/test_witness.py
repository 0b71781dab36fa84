import pytest

from bastion.audit.witness import FileWitness, HttpWitness, note_size, open_witness
from bastion.errors import BadParameter, ConnectionProblem


async def test_file_witness_is_atomic_and_never_goes_backwards(tmp_path):
    w = FileWitness(str(tmp_path / "sub" / "cp"))
    assert await w.fetch() is None
    await w.publish("o\n5\nAAAA\n\n- sig\n")
    await w.publish("o\n3\nAAAA\n\n- sig\n")  # older: ignored
    assert note_size(await w.fetch() or "") == 5
    await w.publish("o\n9\nBBBB\n\n- sig\n")
    assert note_size(await w.fetch() or "") == 9
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["cp"]  # no temp files left


async def test_unwritable_file_witness_is_a_connection_problem(tmp_path):
    (tmp_path / "f").write_text("x")
    w = FileWitness(str(tmp_path / "f" / "cp"))
    with pytest.raises(ConnectionProblem):
        await w.publish("o\n1\nA\n")


def test_open_witness():
    assert open_witness("") is None
    assert isinstance(open_witness("/tmp/x"), FileWitness)
    assert isinstance(open_witness("https://w.example/cp"), HttpWitness)
    with pytest.raises(BadParameter):
        open_witness("ftp://x")
    assert note_size("garbage") == -1
