"""``bsh device enroll`` and ``bsh device status``; the device ceremony of ``bsh login``.

Layer: client edge. Enrollment needs a current ``bsh login`` (the admin's one-time token names
the device; the TPM proves the key). docs/device-trust.md.
"""

from __future__ import annotations

import json
from typing import Any

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import resolve_identity, run_async
from bastion.cli.render import print_json
from bastion.client.api import AuthClient
from bastion.client.device.ceremony import authenticate, enroll
from bastion.client.device.local import load_state
from bastion.client.profile import Profile, ProfileStore
from bastion.client.tls import profile_context
from bastion.contract import devices as d
from bastion.errors import BastionError, NotFound
from bastion.files import write_private_file

__all__ = ["device_ceremony", "device_group"]


def _client_for(profile: Profile) -> AuthClient:
    return AuthClient(profile.proxy, profile_context(profile.path, profile.name, []))


def device_ceremony(
    store: ProfileStore, profile: Profile, challenge: str = ""
) -> dict[str, Any] | None:
    """After a login: when this machine is enrolled in the profile's cluster, prove it and
    return the re-issued certificates (None when it is not enrolled). ``challenge``: the
    login's ``device_challenge`` (one round trip; empty: two)."""
    try:
        load_state(store.home, profile.cluster)
    except NotFound:
        return None

    async def run() -> dict[str, Any]:
        async with _client_for(profile) as client:
            certs = await authenticate(client, store.home, profile.cluster, challenge)
            return certs.model_dump(mode="json")

    return run_async(run())


@click.group("device")
def device_group() -> None:
    """This machine as a trusted device: enroll it, see what the cluster knows.

    \b
    Examples:
      bsh device enroll --token=TOKEN
      bsh device status
    """


@device_group.command("enroll")
@click.option(
    "--token",
    default="",
    help="One-time token from bctl devices enroll (omit: auto-enroll your own device known "
    "to the inventory by its serial, when a role allows it).",
)
@click.option(
    "--software",
    is_flag=True,
    help="Use a software key instead of the TPM (only when the cluster allows it).",
)
@click.option("--tcti", default="", help="TPM TCTI (default: $BSH_TPM_TCTI or the kernel's TPM).")
@handle_errors
def enroll_command(token: str, software: bool, tcti: str) -> None:
    """Enroll this machine: its TPM proves the new attestation key by credential activation.

    \b
    Examples:
      bsh device enroll --token=0b6f...
      bsh device enroll            (auto-enrollment of your inventory-known device)
    """
    store = ProfileStore()
    profile = store.load()

    async def run() -> tuple[d.DeviceReply, Any]:
        async with _client_for(profile) as client:
            return await enroll(
                client, store.home, profile.cluster, token, software=software, tcti=tcti
            )

    reply, state = run_async(run())
    device = reply.device
    click.echo(
        f"device {device.spec.asset_tag} ({device.name}) enrolled with a "
        f"{state.attestation} key (credential {state.credential_id})"
    )
    try:  # the current login's certificates carry the device from now on
        certs = device_ceremony(store, profile)
    except BastionError as exc:
        click.echo(f"warning: device authentication failed: {exc.message}", err=True)
        certs = None
    if certs is not None and (profile.path / "key.tpm").exists():
        # re-issued for the TLS key only: the SSH certificate of a TPM-held key needs a login
        click.echo("run bsh login --key-store=tpm again to carry this device")
    elif certs is not None:
        write_private_file(profile.path / "tls.crt", str(certs["tls_cert"]))
        if certs.get("ssh_cert"):
            write_private_file(profile.path / "key-cert.pub", str(certs["ssh_cert"]) + "\n")
        click.echo("your current login now carries this device (bsh login does so from now on)")


@device_group.command("status")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def status_command(fmt: str) -> None:
    """What the cluster knows about this machine.

    \b
    Example:
      bsh device status
    """
    store = ProfileStore()
    profile = store.load()
    state = load_state(store.home, profile.cluster)
    ident = resolve_identity(None, None, store)

    async def run() -> d.DeviceReply:
        async with AuthClient(ident.addr, ident.ssl_context()) as client:
            return await client.send(d.DEVICES_GET, path={"ref": state.device_id})

    device = run_async(run()).device
    if fmt == "json":
        print_json(json.loads(device.model_dump_json()))
        return
    spec = device.spec
    credential = spec.credential
    rows = [
        ("Device id", device.name),
        ("Asset tag", spec.asset_tag),
        ("OS", f"{spec.os_type} ({spec.profile.os_name} {spec.profile.os_version})".strip()),
        ("Status", spec.enroll_status),
        ("Attestation", credential.attestation if credential else "-"),
        ("Credential", credential.id if credential else "-"),
        ("Compliance", spec.compliance.status),
        ("Last seen", f"{spec.last_seen:%Y-%m-%d %H:%M:%S} UTC" if spec.last_seen else "never"),
    ]
    for key, value in rows:
        click.echo(f"{key + ':':<13} {value}")


@device_group.command("agent")
@click.option(
    "--socket",
    "socket_path",
    default="",
    help="Where to listen (default: agent.sock in the profile, which bsh config names).",
)
@handle_errors
def agent_command(socket_path: str) -> None:
    """Serve an SSH agent that signs with your TPM-held key (bsh login --key-store=tpm), for
    plain OpenSSH through bsh config's IdentityAgent (bsh ssh starts its own). Runs until
    interrupted.

    \b
    Example:
      bsh device agent &
      ssh root@web1.example.com
    """
    import signal
    import sys
    from pathlib import Path

    from bastion.client.device.tpm_key import profile_agent_core
    from bastion.client.ssh_agent import listen, serve

    profile = ProfileStore().load()
    profile_agent_core(profile.path)  # a usable key now, or a one-line error
    path = Path(socket_path) if socket_path else profile.path / "agent.sock"
    listener = listen(path)
    click.echo(f"IdentityAgent {path}", err=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly: remove the socket
    try:
        serve(listener, lambda: profile_agent_core(profile.path), lambda: True)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        path.unlink(missing_ok=True)
