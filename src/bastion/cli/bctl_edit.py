"""``bctl edit KIND/NAME``: edit a resource in ``$VISUAL``/``$EDITOR``, kubectl style.

Layer: client edge. Registered onto the ``bctl`` group by :func:`register`. The resource opens
as YAML under a short ``#`` comment header. An invalid edit (a YAML error, an invalid field, a
changed kind or name, or a refusal of the server's validation) does not lose the edits: the
editor reopens the same text with the error on top as ``#`` comment lines. Saving a reopened
file unchanged (or empty) cancels the edit; a copy of the edits is kept and named. The update is
conditional on the revision that was read, so a concurrent change still fails with
``changed by someone else``.

The text helpers (:func:`opening_text`, :func:`reopen_text`, :func:`content_of`) are pure.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity
from bastion.contract.base import ResourceDoc
from bastion.contract.resources import GET_RESOURCE, UPDATE_RESOURCE
from bastion.errors import BadParameter
from bastion.files import write_private_file
from bastion.types.codec import canonical_kind, dump_resource, load_resources
from bastion.types.meta import Resource

__all__ = ["MAX_ROUNDS", "content_of", "opening_text", "register", "reopen_text", "validate"]

MAX_ROUNDS = 20
"""Reopen at most this often: an editor script that keeps writing invalid text cannot loop."""

CANCELLED = "edit cancelled, nothing changed"


def _header(ref: str) -> str:
    return (
        f"# Edit {ref} below and save; lines starting with '#' are ignored.\n"
        "# An invalid edit reopens this file with the error on top; save it unchanged or\n"
        "# empty to cancel.\n"
    )


def _commented(message: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in message.splitlines())


def opening_text(ref: str, body: str) -> str:
    """The file as the editor first shows it: the header, then the resource's YAML."""
    return _header(ref) + body


def content_of(text: str) -> str:
    """``text`` with every ``#`` line blanked (not removed, so line numbers stay true)."""
    return "".join(
        "\n" if line.startswith("#") else line for line in text.splitlines(keepends=True)
    )


def _body_of(text: str) -> str:
    """``text`` without its leading block of ``#`` lines (the header of the last opening)."""
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return "".join(lines[start:])


def validate(text: str, kind: str, name: str) -> Resource:
    """The one resource an edited file holds.

    Raises:
        BadParameter: malformed YAML or JSON (its line number counts the file's lines), an
            invalid resource, more or fewer than one resource, or a changed kind or name.
    """
    resources = load_resources(content_of(text), f"{kind}/{name}")
    if len(resources) != 1:
        raise BadParameter("the edited file must hold exactly one resource")
    new = resources[0]
    if (new.kind, new.name) != (kind, name):
        raise BadParameter(
            f"kind and name cannot be changed by edit (got {new.kind}/{new.name}); use "
            "bctl create for a new resource"
        )
    return new


def reopen_text(edited: str, error: str, kind: str, name: str) -> str:
    """The file to reopen: the header and ``error`` as ``#`` lines, then the user's edits.

    A local error is computed again against the reopened file, so a line number it names is
    the line the user sees (the header's length does not depend on the numbers in it).
    """
    body = _body_of(edited)

    def build(message: str) -> str:
        return f"{_header(f'{kind}/{name}')}#\n{_commented('error: ' + message)}#\n{body}"

    text = build(error)
    try:
        validate(text, kind, name)
    except BadParameter as exc:
        renumbered = build(exc.message)
        if renumbered.count("\n") == text.count("\n"):
            return renumbered
    return text


def _run_editor(path: Path) -> None:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        result = subprocess.run([*shlex.split(editor), str(path)], check=False)
    except OSError as exc:
        raise BadParameter(
            f"cannot run the editor {editor!r}: {exc.strerror}; set $EDITOR"
        ) from None
    if result.returncode != 0:
        raise BadParameter(
            f"the editor {editor!r} exited with {result.returncode}; nothing changed"
        )


def _keep_copy(text: str, kind: str, name: str) -> str:
    fd, copy = tempfile.mkstemp(prefix=f"bctl-edit-{kind}-{name}-", suffix=".yaml")
    os.close(fd)
    write_private_file(Path(copy), text)
    return copy


def _cancel(edited: str, error: str, kind: str, name: str) -> BadParameter:
    copy = _keep_copy(_body_of(edited), kind, name)
    return BadParameter(f"{CANCELLED} (the last error: {error}); your edits are in {copy}")


def _edit(identity: ClientIdentity, kind: str, name: str) -> None:
    current = identity.send(GET_RESOURCE, path={"kind": kind, "name": name}).root
    manager = current.metadata.labels.get("managed-by")
    if manager:  # bctl apply owns it: the next apply reverts a hand edit
        click.echo(
            f"warning: {kind}/{name} is managed by {manager} (label managed-by={manager}); "
            "the next bctl apply will undo this edit: change the files instead",
            err=True,
        )
    text = opening_text(f"{kind}/{name}", dump_resource(current, "yaml"))
    error = ""
    with tempfile.TemporaryDirectory(prefix="bctl-edit-") as tmp:
        path = Path(tmp) / f"{kind}-{name}.yaml"
        for _ in range(MAX_ROUNDS):
            write_private_file(path, text)
            _run_editor(path)
            edited = path.read_text()
            if content_of(edited) == content_of(text):
                if not error:
                    click.echo("no changes")
                    return
                raise _cancel(edited, error, kind, name)
            if not content_of(edited).strip():
                raise BadParameter(f"{CANCELLED} (the file is empty)")
            try:
                new = validate(edited, kind, name)
                if not new.metadata.revision:
                    new.metadata.revision = current.metadata.revision  # stay conditional
                ref = {"kind": kind, "name": name}
                identity.send(UPDATE_RESOURCE, ResourceDoc(new), path=ref)
            except BadParameter as exc:  # local or the server's validation: reopen
                error = exc.message
                click.echo(f"error: {error}; reopening the editor", err=True)
                text = reopen_text(edited, error, kind, name)
                continue
            click.echo(f'{kind} "{name}" has been updated')
            return
        raise _cancel(edited, f"still invalid after {MAX_ROUNDS} edits: {error}", kind, name)


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add ``edit`` to ``bctl``."""

    @main.command("edit")
    @click.argument("ref", metavar="KIND/NAME")
    @handle_errors
    def edit(ref: str) -> None:
        """Edit a resource in $VISUAL/$EDITOR; the update fails if someone changed it meanwhile.

        An invalid edit reopens the editor with the error on top as '#' lines; save the file
        unchanged (or empty) to cancel.

        \b
        Examples:
          bctl edit role/dev
          EDITOR=nano bctl edit user/alice
        """
        kind, _, name = ref.partition("/")
        kind = canonical_kind(kind.strip())
        if not name:
            raise BadParameter(f"expected KIND/NAME (e.g. role/dev), got {ref!r}")
        _edit(ident(), kind, name)
