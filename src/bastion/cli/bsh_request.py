"""``bsh request``: ask for just-in-time access, review peers' requests, assume approved ones.

Layer: client edge. Every command speaks the typed contract
(:mod:`bastion.contract.requests`) with the current ``bsh login`` profile; ``assume`` (and
``bsh login --request-id``) replace the profile's certificates with ones that carry the request.
"""

from __future__ import annotations

import shlex
import sys
import time
from datetime import UTC, datetime

import click
from cryptography.hazmat.primitives import serialization

from bastion.cli.bsh import format_duration
from bastion.cli.common import emit_json, handle_errors
from bastion.cli.identity import ClientIdentity, resolve_identity
from bastion.cli.render import print_table
from bastion.client.device.ceremony import LoginKeys, enrolled_here, login_keys
from bastion.client.device.tpm_key import save_blob
from bastion.client.profile import Profile, ProfileStore, new_client_key
from bastion.contract import core
from bastion.contract import requests as x
from bastion.contract.base import Empty
from bastion.errors import AccessDenied, BadParameter, BastionError, LimitExceeded
from bastion.types.duration import parse_duration

__all__ = [
    "assume_request",
    "create_and_wait",
    "offer_request",
    "render_request",
    "request_group",
    "requestable_roles",
]

FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")


def _ident() -> ClientIdentity:
    return resolve_identity(None, None)


def _assume_keys(ident: ClientIdentity, store: ProfileStore, profile: Profile) -> LoginKeys:
    """The device ceremony (and the TPM-held key's certification) for the assumed
    certificates, as at login: nothing when this machine is not enrolled in the cluster."""
    profile_dir = store.home / "profiles" / profile.name
    key_store = "tpm" if (profile_dir / "key.tpm").exists() else "software"
    if not enrolled_here(store.home, profile_dir, profile.cluster, key_store):
        return LoginKeys()
    challenge = ident.send(core.PING).device_challenge
    return login_keys(store.home, profile_dir, profile.cluster, challenge, key_store)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _left(iso: str) -> str:
    left = (datetime.fromisoformat(iso) - datetime.now(UTC)).total_seconds()
    return format_duration(left) if left > 0 else "-"


def render_request(r: x.AccessRequestReply) -> None:
    """The block of ``bsh request show`` (and create/review)."""
    approvals = sum(v.verdict == "approve" for v in r.reviews)
    needed = max(r.approvals_needed.values(), default=1)
    click.echo(
        f"Request:     {r.id}\n"
        f"User:        {r.user}\n"
        f"Roles:       {', '.join(r.roles) or '-'}\n"
        f"Resources:   {', '.join(r.resources) or '-'}\n"
        f"Reason:      {r.reason or '-'}\n"
        f"State:       {r.state} ({approvals}/{needed} approvals)\n"
        f"Access for:  until {r.access_expires} ({_left(r.access_expires)} left)\n"
        f"Reviewers:   {', '.join(r.suggested_reviewers) or '-'}"
    )
    for v in r.reviews:
        auto = " (automatic)" if v.automatic else ""
        click.echo(f"  {v.verdict:<7} by {v.author}{auto}: {v.reason or '-'} at {v.created}")


def _emit(r: x.AccessRequestReply, fmt: str) -> None:
    if fmt == "json":
        emit_json(r.model_dump(mode="json"))
    else:
        render_request(r)


def assume_request(request_id: str, ttl: str = "12h", fmt: str = "text") -> Profile:
    """Certificates carrying approved request ``request_id``, saved in the current profile."""
    store = ProfileStore()
    profile = store.load()
    ident = _ident()
    key = new_client_key()
    public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    keys = _assume_keys(ident, store, profile)
    if keys.ssh_public_key:  # the profile's TPM-held key, for both certificates (as at login)
        public_key = keys.ssh_public_key
    body = x.Assume.model_validate(
        {"public_key": public_key, "ttl": parse_duration(ttl), **keys.fields()}
    )
    certs = ident.send(x.ASSUME_REQUEST, body, path={"id": request_id})
    profile.expires = certs.expires
    profile.roles = list(certs.roles)
    profile.logins = list(certs.logins)
    if keys.blob is not None:
        save_blob(store.home / "profiles" / profile.name, keys.blob)
    store.save(profile, key, certs.model_dump(mode="json"), ssh_public=keys.ssh_public_key)
    if fmt == "json":
        emit_json(
            {
                "request": request_id,
                **certs.model_dump(mode="json", include={"user", "roles", "logins", "expires"}),
            }
        )
    else:
        click.echo(
            f"Assumed access request {request_id}: roles {', '.join(certs.roles)}; "
            f"valid until {certs.expires} ({_left(certs.expires)})."
        )
    return profile


@click.group("request")
def request_group() -> None:
    """Ask for just-in-time access and review others' requests.

    \b
    Examples:
      bsh request create --roles=dba --reason="INC-1234" --wait
      bsh request create --resource=node/db7 --reason="INC-1234"
      bsh request ls
      bsh request review ID --approve --reason="looks right"
      bsh request assume ID
    """


@request_group.command("create")
@click.option("--roles", default="", help="Roles to ask for (comma-separated).")
@click.option(
    "--resource",
    "resources",
    multiple=True,
    help="A resource to ask for: node/NAME, db/NAME or app/NAME (repeatable).",
)
@click.option("--reason", default="", help="Why (shown to reviewers, e.g. a ticket).")
@click.option("--duration", default=None, help="How long the access should last (e.g. 1h).")
@click.option("--wait", is_flag=True, help="Wait for the decision, then assume an approval.")
@click.option("--timeout", default="10m", show_default=True, help="How long --wait waits.")
@FORMAT
@handle_errors
def create(
    roles: str,
    resources: tuple[str, ...],
    reason: str,
    duration: str | None,
    wait: bool,
    timeout: str,
    fmt: str,
) -> None:
    """Ask for roles or for specific resources.

    \b
    Examples:
      bsh request create --roles=dba --duration=1h --reason="INC-1234"
      bsh request create --resource=node/db7 --wait --reason="INC-1234"
      bsh request create --resource=db/orders --reason="INC-1234"
    """
    if not roles and not resources:
        raise BadParameter(
            "pass --roles=ROLE[,ROLE] or --resource=node/NAME (or db/NAME, app/NAME)"
        )
    body = x.NewAccessRequest(
        roles=_csv(roles),
        resources=[r for v in resources for r in _csv(v)],
        reason=reason,
        duration=parse_duration(duration) if duration else None,
    )
    if not wait:
        created = _ident().send(x.CREATE_REQUEST, body)
        _emit(created, fmt)
        if fmt == "text":
            click.echo(f"\nAssume it once approved: bsh request assume {created.id}")
        return
    create_and_wait(body, timeout, fmt)


def create_and_wait(body: x.NewAccessRequest, timeout: str = "10m", fmt: str = "text") -> Profile:
    """Create the request, wait until it is decided, and assume it when approved.

    Raises:
        AccessDenied: denied or expired. LimitExceeded: still pending after ``timeout``.
    """
    ident = _ident()
    created = ident.send(x.CREATE_REQUEST, body)
    click.echo(f"Request {created.id} created; waiting for reviews...", err=True)
    deadline = time.monotonic() + parse_duration(timeout).total_seconds()
    current = created
    while current.state == "PENDING":
        if time.monotonic() > deadline:
            raise LimitExceeded(f"request {created.id} is still pending after {timeout}")
        time.sleep(0.5)
        current = ident.send(x.GET_REQUEST, path={"id": created.id})
    if current.state != "APPROVED":
        raise AccessDenied(f"request {created.id} was {current.state.lower()}")
    return assume_request(created.id, fmt=fmt)


def requestable_roles(resource: str) -> list[str] | None:
    """The roles through which the current user may request ``resource`` (``KIND/NAME``), or
    None when they may not (or the check itself fails: the caller only offers a hint)."""
    kind, _, name = resource.partition("/")
    try:
        reply = _ident().send(x.REQUESTABLE, path={"kind": kind, "name": name})
    except BastionError:
        return None
    return list(reply.roles)


@request_group.command("ls")
@click.option(
    "--state",
    type=click.Choice(["", "pending", "approved", "denied", "expired"]),
    default="",
    help="Only requests in this state.",
)
@FORMAT
@handle_errors
def ls(state: str, fmt: str) -> None:
    """Your requests and those you may review.

    \b
    Examples:
      bsh request ls
      bsh request ls --state=pending --format json
    """
    items = _ident().send(x.LIST_REQUESTS, query=x.ListQuery(state=state)).items
    if fmt == "json":
        emit_json([i.model_dump(mode="json") for i in items])
        return
    rows = [
        [
            r.id,
            r.user,
            ", ".join(r.resources or r.roles),
            r.state,
            f"{sum(v.verdict == 'approve' for v in r.reviews)}/"
            f"{max(r.approvals_needed.values(), default=1)}",
            r.reason,
        ]
        for r in items
    ]
    print_table(["ID", "User", "Asks for", "State", "Approvals", "Reason"], rows, "No requests.")


@request_group.command("show")
@click.argument("request_id")
@FORMAT
@handle_errors
def show(request_id: str, fmt: str) -> None:
    """One request with its reviews.

    \b
    Example:
      bsh request show ID
    """
    _emit(_ident().send(x.GET_REQUEST, path={"id": request_id}), fmt)


@request_group.command("review")
@click.argument("request_id")
@click.option("--approve", "verdict", flag_value="approve", help="Approve the request.")
@click.option("--deny", "verdict", flag_value="deny", help="Deny the request.")
@click.option("--reason", default="", help="Why (recorded and shown to the requester).")
@FORMAT
@handle_errors
def review(request_id: str, verdict: str | None, reason: str, fmt: str) -> None:
    """Approve or deny a peer's request.

    \b
    Examples:
      bsh request review ID --approve --reason="looks right"
      bsh request review ID --deny --reason="use the read-only role"
    """
    if verdict not in ("approve", "deny"):
        raise BadParameter("pass --approve or --deny")
    body = x.Review(verdict=verdict, reason=reason)
    _emit(_ident().send(x.REVIEW_REQUEST, body, path={"id": request_id}), fmt)


@request_group.command("drop")
@click.argument("request_id")
@handle_errors
def drop(request_id: str) -> None:
    """Withdraw a request (access already assumed lasts until its certificate expires; lock
    the request id to cut it: bctl lock --access-request=ID).

    \b
    Example:
      bsh request drop ID
    """
    _ident().send(x.DROP_REQUEST, Empty(), path={"id": request_id})
    click.echo(f"Dropped access request {request_id}.")


@request_group.command("assume")
@click.argument("request_id")
@click.option("--ttl", default="12h", show_default=True, help="Capped by the request's expiry.")
@FORMAT
@handle_errors
def assume(request_id: str, ttl: str, fmt: str) -> None:
    """Get certificates carrying an approved request (same as bsh login --request-id).

    \b
    Examples:
      bsh request assume ID
      bsh request assume ID --ttl=1h
    """
    assume_request(request_id, ttl, fmt)


def _quoted(text: str) -> str:
    return shlex.quote(text) if text else '"..."'


def offer_request(node: str, request: bool, reason: str, timeout: str = "10m") -> bool:
    """After ``bsh ssh NODE`` was refused: when the user may request ``node/NODE`` (through
    ``search_as_roles``), print the exact ``bsh request create`` command; with ``request`` (or
    a yes at the prompt on a terminal) create it, wait for approval and assume it.

    Returns:
        True when the access was granted (the caller connects again), False otherwise.
    """
    resource = f"node/{node}"
    roles = requestable_roles(resource)
    if roles is None:
        return False
    command = f"bsh request create --resource={resource} --reason={_quoted(reason)} --wait"
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if not request and not interactive:
        click.echo(
            f"You may request access to {resource} (as {', '.join(roles)}):\n  {command}\n"
            f"or connect with: bsh ssh --request --reason=TICKET {node}",
            err=True,
        )
        return False
    if not request:
        click.echo(f"You may request access to {resource} (as {', '.join(roles)}).", err=True)
        if not click.confirm("Create the request and wait for approval?", err=True):
            click.echo(f"Later: {command}", err=True)
            return False
    if not reason and interactive:
        reason = click.prompt("Reason (shown to reviewers)", err=True)
    body = x.NewAccessRequest(resources=[resource], reason=reason)
    create_and_wait(body, timeout)
    return True
