import sys

from bastion.runtime import tune_allocator


def test_tune_allocator_on_linux():
    assert tune_allocator() is sys.platform.startswith("linux")
