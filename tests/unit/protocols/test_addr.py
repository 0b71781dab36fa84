import pytest

from bastion.protocols.addr import parse_addr


@pytest.mark.parametrize(
    ("text", "addr"),
    [("1.2.3.4:99", ("1.2.3.4", 99)), ("host", ("host", 3025)), ("[::1]:5", ("::1", 5))],
)
def test_parse_addr(text, addr):
    assert parse_addr(text, 3025) == addr
