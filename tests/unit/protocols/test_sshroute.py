import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.protocols.sshroute import (
    SSHRequest,
    encode_reply,
    encode_request,
    find_node,
    parse_request,
)
from bastion.types import Metadata, Node
from bastion.types.inventory import NodeSpec


def test_parse_request():
    assert parse_request(b'{"node": "web1", "login": "root", "port": 2222}') == SSHRequest(
        "web1", "root", 2222
    )
    assert parse_request(b'{"node": "web1", "login": "root"}').port == 22


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"nope",
        b"[]",
        b'{"node": "", "login": "x"}',
        b'{"node": "n"}',
        b'{"node": "n", "login": "x", "port": 0}',
        b'{"node": "n", "login": "x", "port": true}',
        b'{"node": "n", "login": "' + b"x" * 65 + b'"}',
    ],
)
def test_bad_requests(line):
    with pytest.raises(BadParameter):
        parse_request(line)


@given(st.binary(max_size=200))
def test_garbage_only_bad_parameter(data):
    try:
        parse_request(data)
    except BadParameter:
        pass


def nodes():
    return [
        Node(metadata=Metadata(name="web1"), spec=NodeSpec(host_id="1111")),
        Node(metadata=Metadata(name="db1"), spec=NodeSpec(host_id="2222")),
    ]


@pytest.mark.parametrize(
    ("target", "found"),
    [
        ("web1", "web1"),
        ("WEB1", "web1"),
        ("web1.c.local", "web1"),
        ("2222", "db1"),
        ("web2", None),
        ("web1.other", None),
    ],
)
def test_find_node(target, found):
    node = find_node(nodes(), target, "c.local")
    assert (node.name if node else None) == found


def test_request_line_round_trips():
    line = encode_request("web1", "root", 2222)
    assert line == b'{"node": "web1", "login": "root", "port": 2222}\n'
    assert parse_request(line.rstrip(b"\n")) == SSHRequest("web1", "root", 2222)


def test_reply_lines():
    assert encode_reply() == b'{"ok": true}\n'
    assert encode_reply("node web1 not found") == b'{"ok": false, "error": "node web1 not found"}\n'
