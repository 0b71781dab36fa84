import pytest

from bastion.cli.bctl_bots import parse_allow
from bastion.errors import BadParameter


def test_allow_rules() -> None:
    assert parse_allow(("repository=org/app,ref=refs/heads/main", "environment=prod")) == [
        {"repository": "org/app", "ref": "refs/heads/main"},
        {"environment": "prod"},
    ]
    with pytest.raises(BadParameter, match="claim=value"):
        parse_allow(("repository",))
