"""``bctl apply -f`` and ``bctl diff -f``: policy as code (docs/policy.md).

Layer: client edge. Registered onto the ``bctl`` group by :func:`register`.

* Every file is read and validated (the same models, CEL checks included, as the server) before
  anything is sent: one bad file refuses the whole apply.
* The plan (create / update with a unified diff / delete) is printed first; ``--dry-run`` and
  ``bctl diff`` stop there.
* Applied resources carry the label of ``--selector`` (default ``managed-by=git``); ``--prune``
  deletes the resources that carry it and are no longer in the files, and nothing else.
* Updates are conditional on the revision read (``metadata.revision``), so a concurrent change
  fails instead of being overwritten. Applying the same files twice is a no-op.
* Exit codes for CI: 0 nothing to do, 2 changes (applied, or pending for ``diff``/``--dry-run``),
  1 error.

:func:`load_files`, :func:`plan` and :func:`render_plan` are pure (files aside).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from bastion.cli import bctl_policy
from bastion.cli.identity import ClientIdentity
from bastion.contract.base import ResourceDoc
from bastion.contract.resources import (
    CREATE_RESOURCE,
    DELETE_RESOURCE,
    LIST_RESOURCES,
    UPDATE_RESOURCE,
)
from bastion.errors import BadParameter, BastionError
from bastion.types.access import Role
from bastion.types.codec import load_resources, resource_to_dict
from bastion.types.meta import Resource

__all__ = [
    "APPLY_KINDS",
    "EXIT_CHANGED",
    "EXIT_ERROR",
    "EXIT_NOTHING",
    "Change",
    "Plan",
    "load_files",
    "parse_selector",
    "plan",
    "render_plan",
    "register",
]

APPLY_KINDS = ("role", "user", "lock", "cluster_auth_preference", "oidc", "saml", "github")
"""Kinds policy files may hold, in the order they are created (roles before the users that
name them); deletes run in the reverse order."""
_PRUNABLE = frozenset(APPLY_KINDS) - {"cluster_auth_preference"}
_SERVER_FIELDS: dict[str, tuple[str, ...]] = {
    "user": ("status", "created_by", "created", "epoch"),
    "lock": ("created_by", "created"),
}
"""Spec fields the server fills in; never part of a diff."""
EXIT_NOTHING, EXIT_ERROR, EXIT_CHANGED = 0, 1, 2
_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class Change:
    action: str
    """``create``, ``update`` or ``delete``."""
    kind: str
    name: str
    diff: str = ""
    resource: Resource | None = None
    """What to send (create/update), labelled, with the current revision for updates."""


@dataclass(slots=True)
class Plan:
    changes: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes


def parse_selector(text: str) -> tuple[str, str]:
    """``managed-by=git`` as ``("managed-by", "git")``.

    Raises:
        BadParameter: not KEY=VALUE.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise BadParameter(f"--selector {text!r}: use KEY=VALUE, such as managed-by=git")
    return key.strip(), value.strip()


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)
    if path.is_file():
        return [path]
    raise BadParameter(f"{path}: no such file or directory")


def load_files(paths: Iterable[Path]) -> list[Resource]:
    """Every resource in ``paths`` (files, or directories searched for .yaml/.yml/.json).

    Raises:
        BadParameter: naming the file, on the first invalid document, an unsupported kind, or
            a resource given twice; nothing is returned then, so nothing is applied.
    """
    out: list[Resource] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in paths:
        for file in _files(path):
            try:
                resources = load_resources(file.read_text(), str(file))
            except BadParameter as exc:
                message = exc.message
                raise BadParameter(
                    message if message.startswith(str(file)) else f"{file}: {message}"
                ) from None
            for res in resources:
                if res.kind not in APPLY_KINDS:
                    raise BadParameter(
                        f'{file}: {res.kind} "{res.name}": bctl apply manages '
                        f"{', '.join(APPLY_KINDS)}"
                    )
                key = (res.kind, res.name)
                if key in seen:
                    raise BadParameter(
                        f'{file}: {res.kind} "{res.name}" is also defined in {seen[key]}'
                    )
                seen[key] = file
                out.append(res)
    return out


def _comparable(resource: Resource) -> dict[str, Any]:
    data = resource_to_dict(resource)
    meta = dict(data.get("metadata", {}))
    meta.pop("revision", None)
    data["metadata"] = meta
    spec = dict(data.get("spec", {}))
    for name in _SERVER_FIELDS.get(resource.kind, ()):
        spec.pop(name, None)
    data["spec"] = spec
    return data


def _yaml(data: Mapping[str, Any]) -> list[str]:
    return yaml.safe_dump(dict(data), sort_keys=True).splitlines(keepends=True)


def _labelled(resource: Resource, key: str, value: str) -> Resource:
    copy = resource.model_copy(deep=True)
    copy.metadata.labels = {**copy.metadata.labels, key: value}
    copy.metadata.revision = ""
    return copy


def plan(
    desired: Sequence[Resource],
    current: Mapping[str, Sequence[Resource]],
    *,
    selector: tuple[str, str] = ("managed-by", "git"),
    prune: bool = False,
) -> Plan:
    """What to create, update and delete so the cluster matches ``desired``.

    Args:
        desired: the resources from the files.
        current: the cluster's resources per kind (every kind in ``desired``, and every
            prunable kind when ``prune``).
        selector: the label every applied resource gets, and that ``prune`` looks for.
        prune: delete labelled resources that are not in ``desired``.
    """
    key, value = selector
    result = Plan()
    by_key = {(r.kind, r.name): r for kind in current for r in current[kind]}
    wanted = set()
    for kind in APPLY_KINDS:
        for res in (r for r in desired if r.kind == kind):
            wanted.add((kind, res.name))
            target = _labelled(res, key, value)
            existing = by_key.get((kind, res.name))
            if existing is None:
                diff = "".join(
                    difflib.unified_diff([], _yaml(_comparable(target)), "/dev/null", res.name)
                )
                result.changes.append(Change("create", kind, res.name, diff, target))
                continue
            before, after = _comparable(existing), _comparable(target)
            if before == after:
                continue
            target.metadata.revision = existing.metadata.revision
            diff = "".join(
                difflib.unified_diff(
                    _yaml(before), _yaml(after), f"{kind}/{res.name} (cluster)", "(files)"
                )
            )
            result.changes.append(Change("update", kind, res.name, diff, target))
    if prune:
        for kind in reversed(APPLY_KINDS):
            if kind not in _PRUNABLE:
                continue
            for res in current.get(kind, ()):
                if res.metadata.labels.get(key) == value and (kind, res.name) not in wanted:
                    result.changes.append(Change("delete", kind, res.name))
    return result


def render_plan(result: Plan) -> str:
    """The plan as people read it: one line per change, then its diff (pure)."""
    if result.empty:
        return "nothing to do: the cluster matches the files"
    counts = {a: sum(c.action == a for c in result.changes) for a in ("create", "update", "delete")}
    lines = [
        f"plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete"
    ]
    signs = {"create": "+", "update": "~", "delete": "-"}
    for change in result.changes:
        lines.append(f"{signs[change.action]} {change.action} {change.kind}/{change.name}")
        if change.diff:
            lines.extend("    " + line for line in change.diff.rstrip("\n").splitlines())
    return "\n".join(lines)


def _current(identity: ClientIdentity, kinds: Iterable[str]) -> dict[str, list[Resource]]:
    out: dict[str, list[Resource]] = {}
    for kind in kinds:
        out[kind] = identity.send(LIST_RESOURCES, path={"kind": kind}).items
    return out


def _execute(identity: ClientIdentity, result: Plan) -> None:
    for change in result.changes:
        ref = f"{change.kind}/{change.name}"
        if change.action == "create" and change.resource is not None:
            doc = ResourceDoc(change.resource)
            identity.send(CREATE_RESOURCE, doc, path={"kind": change.kind})
        elif change.action == "update" and change.resource is not None:
            doc = ResourceDoc(change.resource)
            identity.send(UPDATE_RESOURCE, doc, path={"kind": change.kind, "name": change.name})
        elif change.action == "delete":
            identity.send(DELETE_RESOURCE, path={"kind": change.kind, "name": change.name})
        click.echo(f"{change.action}d {ref}" if change.action != "delete" else f"deleted {ref}")


def _run_or_fail(ident: Callable[[], ClientIdentity], *args: Any, **kwargs: Any) -> int:
    try:
        return _run(ident(), *args, **kwargs)
    except BastionError as exc:
        click.echo(f"error: {exc.message}", err=True)
    except (ConnectionError, OSError) as exc:
        click.echo(f"error: {exc.strerror or exc}", err=True)
    return EXIT_ERROR


def _run(
    identity: ClientIdentity,
    files: Sequence[str],
    *,
    selector: str,
    prune: bool,
    apply: bool,
    verify: str = "",
) -> int:
    chosen = parse_selector(selector)
    desired = load_files(Path(f) for f in files)
    kinds = {r.kind for r in desired} | (set(_PRUNABLE) if prune else set())
    result = plan(
        desired,
        _current(identity, [k for k in APPLY_KINDS if k in kinds]),
        selector=chosen,
        prune=prune,
    )
    click.echo(render_plan(result))
    if verify and not _verified(identity, verify, result):
        click.echo(
            "error: the roles after these changes break an assertion: nothing applied", err=True
        )
        return EXIT_ERROR
    if result.empty:
        return EXIT_NOTHING
    if apply:
        _execute(identity, result)
    return EXIT_CHANGED


def _verified(identity: ClientIdentity, assertions: str, result: Plan) -> bool:
    """``--verify``: the roles as they would be after the plan keep every assertion."""
    roles, mfa = bctl_policy.fetch_policy(identity)
    changes = [
        (c.action, c.name, c.resource if isinstance(c.resource, Role) else None)
        for c in result.changes
        if c.kind == "role"
    ]
    return bctl_policy.verify_planned(assertions, roles, changes, cluster_requires_mfa=mfa)


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add ``apply`` and ``diff`` to ``bctl``."""
    files_option = click.option(
        "-f",
        "--filename",
        "files",
        multiple=True,
        required=True,
        help="A YAML/JSON file or a directory of them (repeatable).",
    )
    selector_option = click.option(
        "--selector",
        default="managed-by=git",
        show_default=True,
        help="The label applied resources carry (and --prune looks for).",
    )

    @main.command("apply")
    @files_option
    @click.option("--dry-run", is_flag=True, help="Print the plan only.")
    @click.option("--prune", is_flag=True, help="Delete labelled resources no file defines.")
    @selector_option
    @click.option(
        "--verify",
        "verify",
        default="",
        metavar="ASSERTIONS",
        help="Refuse the apply (exit 1) if the resulting roles break an assertion of this file "
        "(bctl policy verify).",
    )
    def apply(
        files: tuple[str, ...], dry_run: bool, prune: bool, selector: str, verify: str
    ) -> None:
        """Make the cluster's roles, users, locks and connectors match the files.

        Exit status: 0 nothing to do, 2 changes applied (or planned with --dry-run), 1 error.

        \b
        Examples:
          bctl apply -f policy/ --dry-run
          bctl apply -f policy/ --prune --selector=managed-by=git
          bctl apply -f policy/ --verify assertions.yaml
        """
        sys.exit(
            _run_or_fail(
                ident, files, selector=selector, prune=prune, apply=not dry_run, verify=verify
            )
        )

    @main.command("diff")
    @files_option
    @click.option("--prune", is_flag=True, help="Also show the deletes apply --prune would do.")
    @selector_option
    def diff(files: tuple[str, ...], prune: bool, selector: str) -> None:
        """Print what bctl apply would change. Exit status: 0 none, 2 changes, 1 error.

        \b
        Example:
          bctl diff -f policy/ --prune
        """
        sys.exit(_run_or_fail(ident, files, selector=selector, prune=prune, apply=False))
