"""bctl: deleting the last user holding the editor role needs a confirmation."""

import pytest
from click.testing import CliRunner

from bastion.cli import bctl
from bastion.errors import BadParameter


def user(name: str, *roles: str) -> dict:
    return {"kind": "user", "metadata": {"name": name}, "spec": {"roles": list(roles)}}


def test_last_holder_of_a_role():
    users = [user("ann", "editor", "access"), user("bob", "access"), user("cy")]
    assert bctl.last_holder_of("editor", "ann", users)
    assert not bctl.last_holder_of("editor", "bob", users)
    assert not bctl.last_holder_of("editor", "ann", [*users, user("dee", "editor")])
    assert not bctl.last_holder_of("editor", "ghost", users)


def test_confirmation_rules(monkeypatch):
    bctl.confirm_removal("ann", yes=True, interactive=False)
    with pytest.raises(BadParameter, match="pass --yes") as refused:
        bctl.confirm_removal("ann", yes=False, interactive=False)
    assert 'user "ann" is the last user with the editor role' in refused.value.message
    monkeypatch.setattr(bctl.click, "confirm", lambda *a, **k: False)
    with pytest.raises(BadParameter, match="not confirmed"):
        bctl.confirm_removal("ann", yes=False, interactive=True)
    monkeypatch.setattr(bctl.click, "confirm", lambda *a, **k: True)
    bctl.confirm_removal("ann", yes=False, interactive=True)


class FakeIdentity:
    def __init__(self, users: list[dict]) -> None:
        self.users = users
        self.calls: list[tuple[str, str]] = []

    def send(self, endpoint, body=None, *, path=None, query=None):
        self.calls.append((endpoint.method, endpoint.url(**(path or {}))))
        if endpoint.method == "GET":
            return endpoint.response.model_validate({"items": self.users})
        return endpoint.response.model_validate({"deleted": "user/x"})


@pytest.mark.parametrize(
    ("args", "deleted", "code"),
    [
        (["users", "rm", "ann"], False, 2),  # no terminal (CliRunner): --yes is required
        (["users", "rm", "ann", "--yes"], True, 0),
        (["users", "rm", "bob"], True, 0),  # not an editor: no question
    ],
)
def test_users_rm(monkeypatch, args, deleted, code):
    fake = FakeIdentity([user("ann", "editor"), user("bob", "access")])
    monkeypatch.setattr(bctl, "ident", lambda: fake)
    result = CliRunner().invoke(bctl.main, args)
    assert result.exit_code == code, result.output
    assert (("DELETE", f"/v1/resources/user/{args[2]}") in fake.calls) is deleted
    if not deleted:
        assert "--yes" in result.output and "nothing was deleted" in result.output
