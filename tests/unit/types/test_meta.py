import pytest
from pydantic import ValidationError

from bastion.types.meta import Metadata


@pytest.mark.parametrize("name", ["a", "web-1.prod", "alice@example.com", "x" * 253])
def test_good_names(name):
    assert Metadata(name=name).name == name


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 254])
def test_bad_names(name):
    with pytest.raises(ValidationError):
        Metadata(name=name)


def test_bad_label_key():
    with pytest.raises(ValidationError, match="invalid label key"):
        Metadata(name="n", labels={"bad key": "v"})
