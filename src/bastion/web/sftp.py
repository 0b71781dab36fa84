"""File upload and download in the web terminal: SFTP to the node's home directory.

Layer: web (IO shell). The files travel through the SSH connection of one of the page's
terminals (``term=<terminal id>``, bound to this web session: :mod:`bastion.web.held`), on a
new ``sftp`` subsystem channel. So the certificate, RBAC, locks and the node's audit (an ``sftp``
event, as for ``bsh scp``/``bsh sftp``) are those of that session, and a node that requires
per-session MFA needs no second touch. Routes:

* ``POST /web/ssh/files`` (multipart: ``csrf_token``, ``term``, ``file``): upload into the home
  directory, at most :data:`MAX_UPLOAD` bytes; CSRF checked before the file is read.
* ``GET /web/ssh/files?term=ID&name=NAME``: download a file of the home directory.

Only plain names in the home directory (:func:`safe_name`): no paths, no ``..``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import asyncssh
import structlog
from aiohttp import BodyPartReader, web

from bastion.errors import AccessDenied, BadParameter, BastionError, ConnectionProblem, NotFound
from bastion.web.held import HeldTerminal, HeldTerminals, owner_key
from bastion.web.security import CSRF_FIELD, check_csrf, security_headers
from bastion.web.sessions import SESSION_COOKIE, current_session

__all__ = ["MAX_UPLOAD", "WebFiles", "safe_name"]

log = structlog.get_logger("bastion.web.sftp")

MAX_UPLOAD: Final = 64 * 1024 * 1024
"""The largest upload accepted (bytes)."""
CHUNK: Final = 64 * 1024
SFTP_TIMEOUT: Final = 30.0


def safe_name(name: str) -> str:
    """A file name in the home directory: no directory part, no ``.``/``..``, no control chars.

    Raises:
        BadParameter: anything else.
    """
    name = name.strip()
    if (
        not name
        or len(name.encode()) > 255
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise BadParameter(
            "give a plain file name in your home directory (no '/', no '..', at most 255 bytes)"
        )
    return name


def _reply(status: int, message: str) -> web.Response:
    response = web.json_response({"message": message}, status=status)
    security_headers(response)
    return response


class WebFiles:
    def __init__(self, held: HeldTerminals) -> None:
        self.held = held

    def _terminal(self, request: web.Request, term: str) -> HeldTerminal:
        if current_session(request) is None:
            raise AccessDenied("sign in first")
        held = self.held.find(term, owner_key(request.cookies.get(SESSION_COOKIE, "")))
        if held is None or held.ended.is_set() or held.conn is None:
            raise NotFound("no open terminal for these files: open a terminal first")
        return held

    async def upload(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.content_length is not None and request.content_length > MAX_UPLOAD + CHUNK:
                raise BadParameter(f"the file is larger than {MAX_UPLOAD // (1024 * 1024)} MiB")
            reader = await request.multipart()
            fields: dict[str, str] = {}
            while True:
                part = await reader.next()
                if part is None:
                    raise BadParameter("choose a file to upload")
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "file":
                    break
                if part.name in (CSRF_FIELD, "term"):
                    fields[part.name] = (await part.read(decode=False))[:256].decode(
                        errors="replace"
                    )
            # before a byte of the file is read: the CSRF token (double submit) and the terminal
            check_csrf(
                request, fields.get(CSRF_FIELD, "") or request.headers.get("X-CSRF-Token", "")
            )
            held = self._terminal(request, fields.get("term", ""))
            name = safe_name(part.filename or "")
            size = await self._put(held, name, part)
        except BastionError as exc:
            return _reply(exc.http_status, exc.message)
        log.info("web upload", node=held.node, login=held.login, name=name, size=size)
        return _reply(200, f"Uploaded {name} ({size} bytes) to {held.login}@{held.node}:~/")

    async def _put(self, held: HeldTerminal, name: str, part: BodyPartReader) -> int:
        size = 0
        try:
            async with (
                await held.conn.start_sftp_client() as sftp,
                sftp.open(name, "wb") as remote,
            ):
                while chunk := await part.read_chunk(CHUNK):
                    size += len(chunk)
                    if size > MAX_UPLOAD:
                        break
                    await remote.write(chunk)
                if size > MAX_UPLOAD:
                    with contextlib.suppress(asyncssh.Error):
                        await sftp.remove(name)
                    raise BadParameter(
                        f"the file is larger than {MAX_UPLOAD // (1024 * 1024)} MiB; nothing kept"
                    )
        except asyncssh.SFTPError as exc:
            raise BadParameter(f"the node refused the upload: {exc.reason}") from None
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionProblem(f"the upload failed: {exc}") from None
        return size

    async def download(self, request: web.Request) -> web.StreamResponse:
        try:
            held = self._terminal(request, request.query.get("term", ""))
            name = safe_name(request.query.get("name", ""))
            sftp = await asyncio.wait_for(held.conn.start_sftp_client(), SFTP_TIMEOUT)
        except BastionError as exc:
            return _reply(exc.http_status, exc.message)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            return _reply(502, f"SFTP to the node failed: {exc}")
        try:
            try:
                remote = await sftp.open(name, "rb")
            except asyncssh.SFTPError as exc:
                return _reply(404, f"cannot read {name} in the home directory: {exc.reason}")
            async with remote:
                response = web.StreamResponse(
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Disposition": _attachment(name),
                    }
                )
                security_headers(response)
                await response.prepare(request)
                while data := await remote.read(CHUNK):
                    await response.write(data)
                await response.write_eof()
        finally:
            sftp.exit()
        log.info("web download", node=held.node, login=held.login, name=name)
        return response


def _attachment(name: str) -> str:
    from urllib.parse import quote

    return f"attachment; filename*=UTF-8''{quote(name, safe='')}"
