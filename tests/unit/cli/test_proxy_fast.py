import pytest

from bastion.cli.proxy_fast import ProxyError, _split, parse_args


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["proxy", "ssh", "root@web1.c:22"], (None, None, "root@web1.c:22")),
        (["--home=/h", "proxy", "ssh", "--cluster=c", "a@b:1"], ("/h", "c", "a@b:1")),
        (["--home", "/h", "proxy", "ssh", "--cluster", "c", "a@b:1"], ("/h", "c", "a@b:1")),
        (["proxy", "ssh", "--help"], None),
        (["ls"], None),
        (["proxy", "ssh"], None),
        (["proxy", "ssh", "a@b", "extra"], None),
    ],
)
def test_parse_args(argv, parsed):
    assert parse_args(argv) == parsed


def test_split_strips_cluster():
    assert _split("root@web1.c.local:2222", "c.local") == ("root", "web1", 2222)
    assert _split("root@web1", "c.local") == ("root", "web1", 22)
    # all-in-one default: the node and the cluster are both named after the host
    assert _split("root@vm.vm:22", "vm") == ("root", "vm", 22)


@pytest.mark.parametrize("target", ["web1:22", "@web1:22", "root@c.local:22", "root@web1:x"])
def test_split_errors(target):
    with pytest.raises(ProxyError):
        _split(target, "c.local")
