"""The CLI's WebAuthn client: answer a server's options with a FIDO2 USB security key (through
python-fido2) or, when enabled, Bastion's software authenticator.

Layer: client edge. Like a browser, it first checks that the RP id the server asks for belongs to
the origin bsh is actually connected to (``https://<--proxy address>``), so a server at another
address cannot obtain an assertion for the real cluster. Then:

1. a FIDO2 key plugged in over USB HID (touch it; a PIN is asked on the terminal when the key
   needs one);
2. else the software authenticator, when ``$BSH_SOFTWARE_AUTHENTICATOR`` names its credential file
   or the profile directory's ``mfa.json`` says ``{"software_authenticator": PATH}``;
3. else a clear error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fido2.rpid import verify_rp_id

from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.mfa.softkey import SoftwareAuthenticator

__all__ = ["ENV_SOFTWARE", "origin_for", "software_authenticator_path", "solve"]

ENV_SOFTWARE = "BSH_SOFTWARE_AUTHENTICATOR"
SETTINGS_FILE = "mfa.json"


def origin_for(addr: str) -> str:
    """The WebAuthn origin of a ``host:port`` address bsh talks to."""
    return addr if addr.startswith("https://") else f"https://{addr}"


def software_authenticator_path(profile_dir: Path | None) -> Path | None:
    """Where the software authenticator keeps its credentials, if it is enabled."""
    env = os.environ.get(ENV_SOFTWARE, "").strip()
    if env:
        return Path(env).expanduser()
    if profile_dir is not None:
        try:
            settings = json.loads((profile_dir / SETTINGS_FILE).read_text())
        except (OSError, ValueError):
            return None
        path = settings.get("software_authenticator") if isinstance(settings, dict) else None
        if isinstance(path, str) and path:
            return Path(path).expanduser()
    return None


def _rp_id(options: dict[str, Any], create: bool) -> str:
    inner = options.get("publicKey", options)
    if create:
        rp = inner.get("rp") or {}
        return str(rp.get("id") or "") if isinstance(rp, dict) else ""
    return str(inner.get("rpId") or "")


def check_rp_id(options: dict[str, Any], origin: str, create: bool) -> None:
    """Raises AccessDenied when the server asks for credentials of a site other than ``origin``."""
    rp_id = _rp_id(options, create) or (urlsplit(origin).hostname or "")
    if not verify_rp_id(rp_id, origin):
        raise AccessDenied(
            f"the server asked for a credential of {rp_id!r}, but bsh is connected to {origin}; "
            "refusing (wrong --proxy address, or someone is impersonating the cluster)"
        )


def solve(
    options: dict[str, Any],
    origin: str,
    *,
    profile_dir: Path | None = None,
    create: bool | None = None,
) -> dict[str, Any]:
    """Run ``create`` (registration) or ``get`` (assertion) for ``options``.

    Args:
        options: the server's options (options_to_json form, optionally ``{"publicKey": ...}``).
        origin: ``https://host:port`` of the address bsh connected to.
        profile_dir: where ``mfa.json`` may enable the software authenticator.
        create: force the ceremony kind; None decides from the options (``rp`` and ``user``
            mean registration).

    Returns:
        The PublicKeyCredential JSON to send back to the server.

    Raises:
        AccessDenied: RP id not valid for the origin. NotFound: no authenticator available, or
        none holds a matching credential. BadParameter: the key refused the request.
    """
    inner = options.get("publicKey", options)
    if not isinstance(inner, dict):
        raise BadParameter("the server sent malformed WebAuthn options")
    is_create = ("rp" in inner and "user" in inner) if create is None else create
    check_rp_id(options, origin, is_create)
    device = _usb_device()
    if device is not None:
        return _solve_usb(device, inner, origin, is_create)
    path = software_authenticator_path(profile_dir)
    if path is not None:
        soft = SoftwareAuthenticator(path)
        return soft.create(inner, origin) if is_create else soft.get(inner, origin)
    raise NotFound(
        "no FIDO2 security key found: plug one in (USB), or for tests and headless machines "
        f"set {ENV_SOFTWARE}=PATH to use the software authenticator (the cluster must allow it)"
    )


def _usb_device() -> Any:
    try:
        from fido2.hid import CtapHidDevice
    except ImportError:  # pragma: no cover - fido2 is a dependency; HID may be unavailable
        return None
    try:
        return next(iter(CtapHidDevice.list_devices()), None)
    except OSError:  # no /dev/hidraw access, no HID subsystem
        return None


def _solve_usb(device: Any, options: dict[str, Any], origin: str, create: bool) -> dict[str, Any]:
    """The python-fido2 client over a HID key; prompts on stderr, PIN from the terminal."""
    import getpass

    from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
    from fido2.webauthn import PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions

    class Terminal(UserInteraction):
        def prompt_up(self) -> None:
            print("Touch your security key...", file=sys.stderr, flush=True)

        def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
            return getpass.getpass("Security key PIN: ")

    client = Fido2Client(
        device,
        client_data_collector=DefaultClientDataCollector(origin),
        user_interaction=Terminal(),
    )
    try:
        if create:
            result: Any = client.make_credential(
                PublicKeyCredentialCreationOptions.from_dict(options)
            )
        else:
            selection = client.get_assertion(PublicKeyCredentialRequestOptions.from_dict(options))
            result = selection.get_response(0)
    except ClientError as exc:
        raise BadParameter(f"the security key refused: {exc.code.name} {exc.cause or ''}") from None
    data: dict[str, Any] = json.loads(json.dumps(dict(result), default=dict))
    return data
