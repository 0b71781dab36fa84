"""``bctl``: the admin CLI (resources, users, join tokens, CAs, audit).

Layer: client edge. Every command talks to the auth API through :mod:`bastion.cli.identity`;
validation happens locally first (so a bad file changes nothing and the error names the line or
field) and again on the server. Errors become ``error: <message>`` and a non-zero exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from bastion.cli import (
    bctl_access,
    bctl_apply,
    bctl_audit,
    bctl_auth,
    bctl_bots,
    bctl_devices,
    bctl_edit,
    bctl_export,
    bctl_locks,
    bctl_policy,
    bctl_requests,
    bctl_risk,
    bctl_scim,
)
from bastion.cli.common import handle_errors
from bastion.cli.identity import ClientIdentity, resolve_identity
from bastion.cli.render import print_json, print_resources, print_table
from bastion.client.api import AuthClient, spki_pin_of_pem
from bastion.contract.base import ResourceDoc
from bastion.contract.core import (
    CONFIRM_NODE,
    CREATE_TOKEN,
    CREATE_USER,
    RESET_USER,
    UPDATE_USER,
    WHOAMI,
    NewToken,
    NewUser,
    UserChange,
)
from bastion.contract.resources import (
    CREATE_RESOURCE,
    DELETE_RESOURCE,
    GET_RESOURCE,
    LIST_RESOURCES,
    WriteQuery,
)
from bastion.errors import AlreadyExists, BadParameter, NotFound
from bastion.types.codec import canonical_kind, load_resources, resource_to_dict

__all__ = ["main"]

FORMATS = click.Choice(["text", "yaml", "json"])
TEXT_OR_JSON = click.Choice(["text", "json"])


class Ctx:
    """What the group options chose; the identity is resolved on first use."""

    def __init__(self, data_dir: str | None, config: str | None) -> None:
        self.data_dir = data_dir
        self.config = config
        self._identity: ClientIdentity | None = None

    @property
    def identity(self) -> ClientIdentity:
        if self._identity is None:
            self._identity = resolve_identity(self.data_dir, self.config)
        return self._identity


def ident() -> ClientIdentity:
    return click.get_current_context().find_object(Ctx).identity  # type: ignore[union-attr]


@click.group()
@click.version_option(package_name="bastion")
@click.option("--data-dir", default=None, help="Use the local admin identity of this data dir.")
@click.option(
    "-c",
    "--config",
    default=None,
    type=click.Path(dir_okay=False),
    help="Use the local admin identity of the data dir in this bastion config.",
)
@click.pass_context
def main(ctx: click.Context, data_dir: str | None, config: str | None) -> None:
    """Administer a Bastion cluster.

    On the auth host pass --data-dir (or -c CONFIG); elsewhere bctl uses your bsh login.

    \b
    Examples:
      bctl users add alice --roles=access --logins=ubuntu
      bctl get roles
      bctl --data-dir /var/lib/bastion status
    """
    ctx.obj = Ctx(data_dir, config)


def split_ref(ref: str, need_name: bool) -> tuple[str, str]:
    kind, _, name = ref.partition("/")
    kind = canonical_kind(kind.strip())
    if need_name and not name:
        raise BadParameter(f"expected KIND/NAME (e.g. role/dev), got {ref!r}")
    return kind, name


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# ---- resources -----------------------------------------------------------------------------------


def _read_source(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "stdin"
    try:
        return Path(path).read_text(), path
    except OSError as exc:
        raise BadParameter(f"cannot read {path}: {exc.strerror}") from None


@main.command()
@click.option("-f", "--file", "path", required=True, help="YAML or JSON file; - for stdin.")
@click.option("--force", is_flag=True, help="Overwrite resources that already exist.")
@handle_errors
def create(path: str, force: bool) -> None:
    """Create resources from a file (several YAML documents separated by ---).

    \b
    Examples:
      bctl create -f role.yaml
      bctl create --force -f role.yaml
    """
    text, source = _read_source(path)
    resources = load_resources(text, source)  # all validated before anything is sent

    async def work(client: AuthClient) -> None:
        for res in resources:
            existed = False
            if force:
                try:
                    await client.send(GET_RESOURCE, path={"kind": res.kind, "name": res.name})
                    existed = True
                except NotFound:
                    pass
            try:
                await client.send(
                    CREATE_RESOURCE,
                    ResourceDoc(res),
                    path={"kind": res.kind},
                    query=WriteQuery(force=force),
                )
            except AlreadyExists as exc:
                raise AlreadyExists(
                    f"{exc.message}; bctl create --force -f {path} overwrites it"
                ) from None
            click.echo(f'{res.kind} "{res.name}" has been {"updated" if existed else "created"}')

    ident().session(work)


def _list(kind: str) -> list[dict[str, Any]]:
    """Every resource of ``kind`` the caller may list, as documents to print."""
    return [resource_to_dict(r) for r in ident().send(LIST_RESOURCES, path={"kind": kind}).items]


@main.command()
@click.argument("ref", metavar="KIND[/NAME]")
@click.option(
    "--format",
    "fmt",
    type=FORMATS,
    default=None,
    help="text (table; default for lists), yaml (default for one item) or json.",
)
@handle_errors
def get(ref: str, fmt: str | None) -> None:
    """Show resources: bctl get roles, bctl get role/dev --format json.

    \b
    Examples:
      bctl get roles
      bctl get role/dev --format json
    """
    kind, name = split_ref(ref, need_name=False)
    if name:
        items = [ident().send(GET_RESOURCE, path={"kind": kind, "name": name}).root]
    else:
        items = ident().send(LIST_RESOURCES, path={"kind": kind}).items
    print_resources(
        kind, [resource_to_dict(i) for i in items], fmt or ("yaml" if name else "text"), bool(name)
    )


@main.command()
@click.argument("ref", metavar="KIND/NAME")
@handle_errors
def rm(ref: str) -> None:
    """Delete a resource: bctl rm role/dev.

    \b
    Example:
      bctl rm role/dev
    """
    kind, name = split_ref(ref, need_name=True)
    ident().send(DELETE_RESOURCE, path={"kind": kind, "name": name})
    click.echo(f'{kind} "{name}" has been deleted')


@main.command()
@click.option("--format", "fmt", type=TEXT_OR_JSON, default="text")
@handle_errors
def status(fmt: str) -> None:
    """Who am I, which cluster, which server.

    \b
    Examples:
      bctl status
      bctl status --format json
    """
    identity = ident()
    who = identity.send(WHOAMI).model_dump()
    info = {
        **who,
        "server": identity.addr,
        "identity": identity.source,
        "ca_pin": spki_pin_of_pem(identity.ca_pem)[0],
    }
    if fmt == "json":
        print_json(info)
        return
    rows = [
        ["Cluster", str(who.get("cluster"))],
        ["User", str(who.get("user"))],
        ["Kind", str(who.get("kind"))],
        ["Roles", ", ".join(who.get("roles") or [])],
        ["Logins", ", ".join(who.get("logins") or []) or "-"],
        ["Valid until", str(who.get("expires"))],
        ["Auth server", identity.addr],
        ["Identity", identity.source],
        ["CA pin", info["ca_pin"]],
    ]
    print_table(["", ""], rows)


# ---- users ---------------------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Manage local users and their invites.

    \b
    Examples:
      bctl users add alice --roles=access --logins=ubuntu
      bctl users ls
    """


def _traits(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise BadParameter(f"--traits {item!r}: expected key=value1,value2")
        out.setdefault(key.strip(), []).extend(_csv(val))
    return out


def _print_invite(invite: dict[str, Any], fmt: str, verb: str) -> None:
    if fmt == "json":
        print_json(invite)
        return
    pin = spki_pin_of_pem(ident().ca_pem)[0]
    # the URL names the proxy (where users log in); older servers named auth
    proxy = urlsplit(str(invite["url"])).netloc or ident().addr
    click.echo(
        f'User "{invite["user"]}" has been {verb}. Share this one-time invite '
        f"(expires {invite['expires']}):\n  {invite['url']}\n\n"
        f"They accept it with:\n  bsh login --proxy={proxy} --invite={invite['token']} "
        f"--ca-pin={pin}"
    )


@users.command("add")
@click.argument("name")
@click.option("--roles", required=True, help="Comma-separated roles, e.g. access,editor.")
@click.option("--logins", default="", help="Comma-separated OS logins (the logins trait).")
@click.option("--traits", "traits", multiple=True, metavar="KEY=V1,V2", help="Extra traits.")
@click.option("--format", "fmt", type=TEXT_OR_JSON, default="text")
@handle_errors
def users_add(name: str, roles: str, logins: str, traits: tuple[str, ...], fmt: str) -> None:
    """Create a user and print a one-time invite.

    \b
    Examples:
      bctl users add alice --roles=access --logins=ubuntu,root
      bctl users add bob --roles=editor,access --traits=teams=web,db
    """
    body = {"name": name, "roles": _csv(roles), "logins": _csv(logins), "traits": _traits(traits)}
    try:
        invite = ident().send(CREATE_USER, NewUser.model_validate(body)).model_dump()
    except AlreadyExists as exc:
        raise AlreadyExists(
            f"{exc.message}: bctl users update {name} --set-roles={roles} changes its roles, "
            f"bctl users reset {name} issues a new invite"
        ) from None
    _print_invite(invite, fmt, "created")


@users.command("ls")
@click.option("--format", "fmt", type=FORMATS, default="text")
@handle_errors
def users_ls(fmt: str) -> None:
    """List users.

    \b
    Examples:
      bctl users ls
      bctl users ls --format json
    """
    print_resources("user", _list("user"), fmt, False)


ADMIN_ROLE = "editor"
"""The built-in role that administers the cluster (users, roles, tokens, CAs)."""


def last_holder_of(role: str, name: str, users: list[dict[str, Any]]) -> bool:
    """Whether ``name`` is the only user in ``users`` (the API's user resources) holding
    ``role``."""
    holders = {
        str((u.get("metadata") or {}).get("name"))
        for u in users
        if role in ((u.get("spec") or {}).get("roles") or [])
    }
    return holders == {name}


def confirm_removal(name: str, yes: bool, interactive: bool) -> None:
    """Ask before deleting the last user holding :data:`ADMIN_ROLE`; ``--yes`` skips the
    question, and without a terminal it is required.

    Raises:
        BadParameter: not confirmed (nothing was deleted).
    """
    if yes:
        return
    warning = (
        f'user "{name}" is the last user with the {ADMIN_ROLE} role: after this, only the '
        "local admin identity on the auth host (bctl --data-dir) can administer the cluster"
    )
    if not interactive:
        raise BadParameter(f"{warning}; pass --yes to delete anyway (nothing was deleted)")
    if not click.confirm(f"{warning}. Delete?", default=False, err=True):
        raise BadParameter("not confirmed; nothing was deleted")


@users.command("rm")
@click.argument("name")
@click.option(
    "--yes", is_flag=True, help=f"Do not ask before deleting the last {ADMIN_ROLE} (scripts)."
)
@handle_errors
def users_rm(name: str, yes: bool) -> None:
    """Delete a user (and their credentials).

    \b
    Examples:
      bctl users rm alice
      bctl users rm alice --yes
    """
    identity = ident()
    if not yes:
        users = [
            resource_to_dict(u) for u in identity.send(LIST_RESOURCES, path={"kind": "user"}).items
        ]
        if last_holder_of(ADMIN_ROLE, name, users):
            confirm_removal(name, yes, sys.stdin.isatty())
    identity.send(DELETE_RESOURCE, path={"kind": "user", "name": name})
    click.echo(f'user "{name}" has been deleted')


@users.command("update")
@click.argument("name")
@click.option("--set-roles", default=None, help="Replace the roles (comma-separated).")
@click.option("--set-logins", default=None, help="Replace the logins (comma-separated).")
@click.option(
    "--set-traits", "traits", multiple=True, metavar="KEY=V1,V2", help="Replace one trait."
)
@handle_errors
def users_update(
    name: str, set_roles: str | None, set_logins: str | None, traits: tuple[str, ...]
) -> None:
    """Change a user's roles, logins or traits (takes effect at their next login).

    \b
    Examples:
      bctl users update alice --set-roles=access,auditor
      bctl users update alice --set-logins=ubuntu
    """
    body: dict[str, Any] = {}
    if set_roles is not None:
        body["roles"] = _csv(set_roles)
    if set_logins is not None:
        body["logins"] = _csv(set_logins)
    if traits:
        body["traits"] = _traits(traits)
    if not body:
        raise BadParameter("nothing to update: pass --set-roles, --set-logins or --set-traits")
    ident().send(UPDATE_USER, UserChange.model_validate(body), path={"name": name})
    click.echo(f'user "{name}" has been updated')


@users.command("reset")
@click.argument("name")
@click.option("--format", "fmt", type=TEXT_OR_JSON, default="text")
@handle_errors
def users_reset(name: str, fmt: str) -> None:
    """Forget a user's password and second factor, unlock them and issue a new invite.

    \b
    Example:
      bctl users reset alice
    """
    _print_invite(ident().send(RESET_USER, path={"name": name}).model_dump(), fmt, "reset")


# ---- join tokens ---------------------------------------------------------------------------------


@main.group()
def tokens() -> None:
    """Manage join tokens for agents and bots.

    \b
    Examples:
      bctl tokens add --type=node --ttl=1h
      bctl tokens ls
    """


def _labels(value: str) -> dict[str, str]:
    out = {}
    for item in _csv(value):
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise BadParameter(f"--labels {item!r}: expected key=value")
        out[key] = val
    return out


@tokens.command("add")
@click.option("--type", "types", required=True, help="node, db, app, bot (comma-separated).")
@click.option("--ttl", default="30m", show_default=True, help="How long the token is valid.")
@click.option("--labels", default="", help="Labels of the joining host: k=v,k2=v2.")
@click.option("--format", "fmt", type=TEXT_OR_JSON, default="text")
@handle_errors
def tokens_add(types: str, ttl: str, labels: str, fmt: str) -> None:
    """Create a single-use join token.

    \b
    Example:
      bctl tokens add --type=node --ttl=1h --labels=env=prod
    """
    body = {"roles": _csv(types), "ttl": ttl, "labels": _labels(labels)}
    new = ident().send(CREATE_TOKEN, NewToken.model_validate(body)).model_dump()
    if fmt == "json":
        print_json(new)
        return
    pin = spki_pin_of_pem(ident().ca_pem)[0]
    click.echo(
        f"The join token {new['token']} expires at {new['expires']} and can be used once.\n\n"
        f"Join with:\n  bbot join --auth={ident().addr} --token={new['token']} --ca-pin={pin} "
        f"--name=HOSTNAME --dest=DIR --role={_csv(types)[0]}"
    )


@tokens.command("ls")
@click.option("--format", "fmt", type=FORMATS, default="text")
@handle_errors
def tokens_ls(fmt: str) -> None:
    """List join tokens (names only; the secrets are never stored).

    \b
    Example:
      bctl tokens ls
    """
    print_resources("token", _list("token"), fmt, False)


@tokens.command("rm")
@click.argument("name")
@handle_errors
def tokens_rm(name: str) -> None:
    """Delete a join token.

    \b
    Example:
      bctl tokens rm TOKEN
    """
    ident().send(DELETE_RESOURCE, path={"kind": "token", "name": name})
    click.echo(f'token "{name}" has been deleted')


@main.group()
def nodes() -> None:
    """Nodes: confirm the host now serving a node name.

    \b
    Example:
      bctl nodes confirm web1
    """


@nodes.command("confirm")
@click.argument("name")
@handle_errors
def nodes_confirm(name: str) -> None:
    """Accept the host now serving node NAME (after it re-joined under the same name).

    Until then the proxy refuses the node, as OpenSSH refuses a changed host key: the name
    could have been taken over by another host once its old record expired.

    \b
    Example:
      bctl nodes confirm web1
    """
    answer = ident().send(CONFIRM_NODE, path={"name": name})
    click.echo(
        f"node {name} is now served by host {answer.host_id} "
        f"(was {answer.previous_host_id or 'not pinned'})"
    )


bctl_auth.register(main, ident)
bctl_edit.register(main, ident)
bctl_locks.register(main, ident)
bctl_bots.register(main, ident)
bctl_export.register(main)
bctl_audit.register(main, ident)
bctl_access.register(main, ident)
bctl_apply.register(main, ident)
bctl_policy.register(main, ident)
bctl_devices.register(main, ident)
bctl_requests.register(main, ident)
bctl_scim.register(main, ident)
bctl_risk.register(main, ident)
