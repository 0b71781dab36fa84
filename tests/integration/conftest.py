"""Integration fixtures: one real ``bastion`` daemon per xdist worker (session scope), and an
:class:`harness.Env` per test with its own BSH_HOME root. Tests use unique names, so they never
interfere on the shared cluster."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# --import-mode=importlib does not put test directories on sys.path; test_cli imports harness.
sys.path.insert(0, str(Path(__file__).parent))
from harness import Cluster, Env, start_cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def env(cluster: Cluster, tmp_path: Path) -> Env:
    return Env(cluster, tmp_path)
