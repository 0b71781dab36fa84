"""Tests for bastion.testing.peers.mariadb (the server itself runs in the integration tests)."""

from __future__ import annotations

import pytest

from bastion.testing.peers.mariadb import MariaDBUnavailable, find_mariadb_bin


def test_missing_binary_is_reported_with_the_packages_to_install() -> None:
    with pytest.raises(MariaDBUnavailable, match="mariadb-server"):
        find_mariadb_bin("no-such-mariadb-binary")
