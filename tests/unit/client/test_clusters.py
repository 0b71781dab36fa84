import json
from typing import Any

import pytest

from bastion.client import clusters
from bastion.client.clusters import _line, needs_session_mfa
from bastion.errors import AccessDenied, NotFound
from bastion.rbac.session_mfa import MFA_REQUIRED_MESSAGE


def test_request_line_names_the_cluster() -> None:
    line = _line("leaf.test", node="web1", login="root", port=22)
    assert line.endswith(b"\n")
    assert json.loads(line) == {"cluster": "leaf.test", "node": "web1", "login": "root", "port": 22}


def test_only_the_mfa_refusal_triggers_the_ceremony() -> None:
    assert clusters.MFA_REFUSAL in MFA_REQUIRED_MESSAGE  # the leaf's message, as sent
    assert needs_session_mfa(AccessDenied(MFA_REQUIRED_MESSAGE))
    assert not needs_session_mfa(AccessDenied("access denied to root@web1"))
    assert not needs_session_mfa(ValueError(MFA_REQUIRED_MESSAGE))


class _Fake:
    def __init__(self, first: Exception | None) -> None:
        self.first = first
        self.contexts: list[Any] = []
        self.asked: list[tuple[str, str, str]] = []

    async def connect(self, *args: Any, **kw: Any) -> str:
        ctx = args[5]
        self.contexts.append(ctx)
        if ctx is None and self.first is not None:
            raise self.first
        return "conn"

    async def creds(self, profile: Any, node: str, login: str, solver: Any, **kw: Any) -> str:
        self.asked.append((kw["cluster"], node, login))
        return "creds"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> _Fake:
    f = _Fake(request.param)
    monkeypatch.setattr(clusters, "_connect_leaf", f.connect)
    monkeypatch.setattr(clusters, "session_credentials", f.creds)
    monkeypatch.setattr(clusters, "session_ssl_context", lambda profile, creds: "session-ctx")
    return f


@pytest.mark.parametrize("fake", [AccessDenied(MFA_REQUIRED_MESSAGE)], indirect=True)
async def test_mfa_refusal_runs_the_ceremony_for_the_leaf_then_retries(fake: _Fake) -> None:
    got: object = await clusters.connect_leaf(object(), "leaf.x", "web1.leaf.x", "root")  # type: ignore[arg-type]
    assert got == "conn" and fake.contexts == [None, "session-ctx"]
    assert fake.asked == [("leaf.x", "web1", "root")]


@pytest.mark.parametrize("fake", [None], indirect=True)
async def test_no_ceremony_when_the_leaf_admits(fake: _Fake) -> None:
    got: object = await clusters.connect_leaf(object(), "leaf.x", "web1", "root")  # type: ignore[arg-type]
    assert got == "conn"
    assert fake.contexts == [None] and fake.asked == []


@pytest.mark.parametrize("fake", [NotFound("node web1 not found")], indirect=True)
async def test_other_refusals_pass_through(fake: _Fake) -> None:
    with pytest.raises(NotFound):
        await clusters.connect_leaf(object(), "leaf.x", "web1", "root")  # type: ignore[arg-type]
    assert fake.asked == []
