import json

from bastion.client.clusters import _line


def test_request_line_names_the_cluster() -> None:
    line = _line("leaf.test", node="web1", login="root", port=22)
    assert line.endswith(b"\n")
    assert json.loads(line) == {"cluster": "leaf.test", "node": "web1", "login": "root", "port": 22}
