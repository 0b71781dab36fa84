"""The JSON body of an HTTP request, read one way for every route of the API and the web.

Layer: ``web`` (the lower half of the HTTP edge; :mod:`bastion.api` mounts the web pages and
uses this too, so it lives here rather than in ``api``).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bastion.errors import BadParameter

__all__ = ["read_json"]


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (shared by every API route module).

    Always UTF-8 (RFC 8259), whatever charset the Content-Type names: the admin-MFA scope hashes
    these bytes, so they must have exactly one meaning.

    Raises:
        BadParameter: not UTF-8 JSON, or not an object.
    """
    try:
        body = json.loads((await request.read()).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadParameter("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadParameter("request body must be a JSON object")
    return body
