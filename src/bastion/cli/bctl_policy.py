"""``bctl policy verify``: assertions about the role set, answered by Z3 (docs/policy.md).

Layer: client edge. Registered onto the ``bctl`` group by :func:`register`; ``bctl apply
--verify`` calls :func:`verify_planned`. The answers come from :mod:`bastion.rbac.solver`
(pure, imported when a command runs: Z3 takes a moment to load).

Exit codes: 0 every assertion holds, 1 one fails (its counterexample is printed) or an error,
3 none fails but one is unknown (outside the encoded fragment, or the solver gave up).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bastion.cli.identity import ClientIdentity
from bastion.contract.resources import LIST_RESOURCES
from bastion.errors import BadParameter, BastionError
from bastion.types.access import AuthPreference, Role
from bastion.types.codec import load_resources

if TYPE_CHECKING:
    from bastion.rbac.solver import Result

__all__ = [
    "EXIT_FAILS",
    "EXIT_HOLDS",
    "EXIT_UNKNOWN",
    "exit_code",
    "fetch_policy",
    "load_roles",
    "register",
    "render",
    "verify_files",
    "verify_planned",
]

EXIT_HOLDS, EXIT_FAILS, EXIT_UNKNOWN = 0, 1, 3
_SUFFIXES = (".yaml", ".yml", ".json")


def fetch_policy(identity: ClientIdentity) -> tuple[list[Role], bool]:
    """The cluster's roles, and whether its auth preference requires per-session MFA."""
    roles = identity.send(LIST_RESOURCES, path={"kind": "role"}).items
    prefs = identity.send(LIST_RESOURCES, path={"kind": "cluster_auth_preference"}).items
    mfa = any(isinstance(p, AuthPreference) and p.spec.require_session_mfa for p in prefs)
    return [r for r in roles if isinstance(r, Role)], mfa


def load_roles(paths: Sequence[str]) -> list[Role]:
    """The roles in these files or directories (other kinds are skipped).

    Raises:
        BadParameter: a missing path, an invalid document, or a role defined twice.
    """
    roles: dict[str, Role] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)
        elif path.is_file():
            files = [path]
        else:
            raise BadParameter(f"{path}: no such file or directory")
        for file in files:
            for res in load_resources(file.read_text(), str(file)):
                if isinstance(res, Role):
                    if res.name in roles:
                        raise BadParameter(f'{file}: role "{res.name}" is defined twice')
                    roles[res.name] = res
    return list(roles.values())


def exit_code(results: Sequence[Result]) -> int:
    if any(r.status == "fails" for r in results):
        return EXIT_FAILS
    if any(r.status == "unknown" for r in results):
        return EXIT_UNKNOWN
    return EXIT_HOLDS


def _yaml_line(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def render(results: Sequence[Result]) -> str:
    """The text ``bctl policy verify`` prints (pure)."""
    lines = []
    for r in results:
        lines.append(f"{r.status.upper():<7} {r.name}: {r.reason} ({r.seconds * 1000:.0f} ms)")
        cx = r.counterexample
        if cx is not None:
            lines.append(f"  user:    {cx.user!r} roles {_yaml_line(list(cx.roles))}")
            lines.append(f"           traits {_yaml_line(cx.traits)}")
            lines.append(f"  node:    {cx.node!r} labels {_yaml_line(cx.labels)}")
            lines.append(f"  login:   {cx.login!r}")
            lines.append(
                f"  request: mfa_verified={str(cx.mfa_verified).lower()} "
                f"source_ip={cx.source_ip!r} time={cx.time.isoformat()}"
            )
            if cx.decision is not None:
                lines.append(f"  checker: {cx.decision.reason}")
    holds = sum(r.status == "holds" for r in results)
    fails = sum(r.status == "fails" for r in results)
    lines.append(f"{holds} hold, {fails} fail, {len(results) - holds - fails} unknown")
    return "\n".join(lines)


def verify_files(
    assertion_file: str, roles: Sequence[Role], *, cluster_requires_mfa: bool, timeout_s: float
) -> list[Result]:
    """Load ``assertion_file`` and answer it over ``roles``.

    Raises:
        BadParameter: the file is missing or invalid (one line naming the field).
    """
    from bastion.rbac.solver import load_assertions, verify

    path = Path(assertion_file)
    if not path.is_file():
        raise BadParameter(f"{path}: no such file")
    assertions = load_assertions(path.read_text(), str(path))
    return verify(
        roles,
        assertions,
        cluster_requires_mfa=cluster_requires_mfa,
        timeout_ms=int(timeout_s * 1000),
    )


def verify_planned(
    assertion_file: str,
    current: Sequence[Role],
    changes: Sequence[tuple[str, str, Role | None]],
    *,
    cluster_requires_mfa: bool = False,
) -> bool:
    """``bctl apply --verify``: do the roles after the planned changes keep every assertion?

    Args:
        assertion_file: the assertions.
        current: the cluster's roles now.
        changes: ``(action, name, role)`` per planned role change (create, update, delete).

    Returns:
        True when every assertion holds; the results are printed either way.
    """
    after = {r.name: r for r in current}
    for action, name, role in changes:
        if action == "delete":
            after.pop(name, None)
        elif role is not None:
            after[name] = role
    results = verify_files(
        assertion_file,
        list(after.values()),
        cluster_requires_mfa=cluster_requires_mfa,
        timeout_s=30,
    )
    click.echo(render(results))
    return exit_code(results) == EXIT_HOLDS


def register(main: click.Group, ident: Callable[[], ClientIdentity]) -> None:
    """Add the ``policy`` group to ``bctl``."""

    @main.group("policy")
    def policy() -> None:
        """Questions about the role set, answered by the Z3 solver (docs/policy.md).

        \b
        Examples:
          bctl policy verify -f assertions.yaml
          bctl policy verify -f assertions.yaml --roles policy/
        """

    @policy.command("verify")
    @click.option("-f", "--filename", "file", required=True, help="The assertion file (YAML).")
    @click.option(
        "--roles",
        "role_paths",
        multiple=True,
        help="Verify these role files or directories instead of the cluster's roles (offline).",
    )
    @click.option(
        "--cluster-mfa/--no-cluster-mfa",
        default=None,
        help="Whether the cluster requires per-session MFA (default: the cluster's setting; "
        "off with --roles).",
    )
    @click.option("--timeout", default=30.0, show_default=True, help="Seconds per assertion.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
    def verify(
        file: str,
        role_paths: tuple[str, ...],
        cluster_mfa: bool | None,
        timeout: float,
        fmt: str,
    ) -> None:
        """Prove assertions for every user, node, login and request, or print a counterexample.

        Exit status: 0 all hold, 1 one fails (or an error), 3 one is unknown.

        \b
        Examples:
          bctl policy verify -f assertions.yaml
          bctl policy verify -f assertions.yaml --roles policy/   # offline, for CI
        """
        try:
            if role_paths:
                roles, mfa = load_roles(role_paths), False
            else:
                roles, mfa = fetch_policy(ident())
            if cluster_mfa is not None:
                mfa = cluster_mfa
            results = verify_files(file, roles, cluster_requires_mfa=mfa, timeout_s=timeout)
        except BastionError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(EXIT_FAILS)
        except (ConnectionError, OSError) as exc:
            click.echo(f"error: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_FAILS)
        if fmt == "json":
            click.echo(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
        else:
            click.echo(render(results))
        sys.exit(exit_code(results))
