"""bctl edit: an invalid edit reopens the editor with the error on top (kubectl style)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bastion.cli import bctl_edit
from bastion.errors import BadParameter
from bastion.rbac.builtin import builtin_role
from bastion.types.codec import resource_to_dict

ROLE = resource_to_dict(builtin_role("access"))


class FakeIdentity:
    def __init__(self) -> None:
        self.puts: list[dict] = []

    def send(self, endpoint, body=None, *, path=None, query=None):
        if endpoint.method == "GET":
            doc = {**ROLE, "metadata": {**ROLE["metadata"], "revision": "r1"}}
            return endpoint.response.model_validate(doc)
        assert endpoint.method == "PUT" and body is not None
        self.puts.append(body.model_dump(mode="json"))
        return body


def editor(*steps: Callable[[str], str], seen: list[str]) -> Callable[[Path], None]:
    """An editor that applies ``steps`` in turn, one per opening, recording what it saw."""
    queue = list(steps)

    def run(path: Path) -> None:
        text = path.read_text()
        seen.append(text)
        path.write_text(queue.pop(0)(text) if queue else text)

    return run


def test_an_invalid_edit_reopens_with_the_error_on_top_and_keeps_the_edits(monkeypatch):
    seen: list[str] = []
    fake = FakeIdentity()

    def break_it(text: str) -> str:
        text = text.replace("  description: Log in", "  description: mine. Log in", 1)
        return text.replace("metadata:\n", "metadata:\n  bogus_field: 1\n", 1)

    def fix_it(text: str) -> str:
        return text.replace("  bogus_field: 1\n", "")

    monkeypatch.setattr(bctl_edit, "_run_editor", editor(break_it, fix_it, seen=seen))
    bctl_edit._edit(fake, "role", "access")  # type: ignore[arg-type]
    assert len(seen) == 2
    first, reopened = seen
    assert first.startswith("# Edit role/access below")
    header = reopened.split("\nkind:")[0]
    assert '# error: role "access": metadata.bogus_field: unknown field' in header
    assert all(line.startswith("#") for line in header.splitlines())
    assert "description: mine" in reopened  # the edits survived the reopening
    [put] = fake.puts
    assert put["metadata"]["description"].startswith("mine. Log in")
    assert put["metadata"]["revision"] == "r1"  # still conditional on what was read


def test_an_unchanged_reopened_file_cancels(monkeypatch, tmp_path):
    seen: list[str] = []
    fake = FakeIdentity()
    monkeypatch.setattr(bctl_edit.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(bctl_edit, "_run_editor", editor(lambda t: t + "  junk: [\n", seen=seen))
    with pytest.raises(BadParameter, match="edit cancelled, nothing changed") as cancelled:
        bctl_edit._edit(fake, "role", "access")  # type: ignore[arg-type]
    assert "invalid YAML" in cancelled.value.message and len(seen) == 2
    assert fake.puts == []
    copy = Path(cancelled.value.message.rsplit(" in ", 1)[1])
    assert copy.read_text().endswith("  junk: [\n") and not copy.read_text().startswith("#")


def test_comment_lines_are_blanked_not_removed():
    text = bctl_edit.opening_text("role/dev", "kind: role\n")
    assert bctl_edit.content_of(text) == "\n\n\nkind: role\n"  # line numbers stay true


def test_an_empty_file_cancels(monkeypatch):
    fake = FakeIdentity()
    monkeypatch.setattr(bctl_edit, "_run_editor", editor(lambda t: "# nothing\n", seen=[]))
    with pytest.raises(BadParameter, match="edit cancelled, nothing changed.*empty"):
        bctl_edit._edit(fake, "role", "access")  # type: ignore[arg-type]
    assert fake.puts == []


def test_the_line_number_in_a_reopened_file_is_the_line_the_user_sees():
    body = yaml.safe_dump(ROLE, sort_keys=False).replace(
        "metadata:\n", "metadata:\n  x: [a\n  y: 1\n", 1
    )
    saved = bctl_edit.opening_text("role/access", body)
    with pytest.raises(BadParameter) as first:
        bctl_edit.validate(saved, "role", "access")
    reopened = bctl_edit.reopen_text(saved, first.value.message, "role", "access")
    lines = reopened.splitlines()
    line = int(reopened.split("invalid YAML at line ")[1].split(",")[0])
    assert lines[line - 1] == "  y: 1"
    assert reopened.endswith(body)


def test_a_changed_name_is_refused():
    with pytest.raises(BadParameter, match="kind and name cannot be changed"):
        bctl_edit.validate(yaml.safe_dump(ROLE).replace("name: access", "name: other"), "role", "x")
