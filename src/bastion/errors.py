"""The one exception tree of Bastion.

::

    BastionError
    ├── NotFound               404  a resource or key does not exist
    ├── AlreadyExists          409  create of something that exists
    ├── CompareFailed          409  revision / compare-and-swap conflict (someone else changed it)
    ├── BadParameter           400  invalid input; the message says what and how to fix it
    ├── AccessDenied           403  opaque to the client; the reason goes to audit and debug log
    ├── AuthenticationFailed   401  wrong credentials / missing client certificate
    │   └── MFARequired        401  a fresh WebAuthn assertion is needed (carries the challenge)
    ├── ConnectionProblem      503  dial, tunnel or backend unreachable
    ├── LimitExceeded          429  rate and connection limits
    └── ProtocolError               never raised directly
        ├── LocalProtocolError      we misused a codec (a bug)
        └── RemoteProtocolError     the peer sent garbage

Foreign exceptions (sqlite3, asyncpg, ssl, OSError, aiohttp) are translated at exactly one
boundary per adapter with ``raise ... from exc``. Every class knows its HTTP status and CLI exit
code so that the mapping lives here and nowhere else.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "AuthenticationFailed",
    "BadParameter",
    "BastionError",
    "CompareFailed",
    "ConnectionProblem",
    "LimitExceeded",
    "LocalProtocolError",
    "MFARequired",
    "NotFound",
    "ProtocolError",
    "RemoteProtocolError",
    "error_from_code",
]


class BastionError(Exception):
    """Base of every error Bastion raises on purpose."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        """The backend key a storage condition failed on (AlreadyExists, NotFound,
        CompareFailed from the backend), so a caller of a multi-key transaction knows which
        of its keys was the problem; None otherwise."""

    def __str__(self) -> str:
        return self.message


class NotFound(BastionError):
    code = "not_found"
    http_status = 404
    exit_code = 4


class AlreadyExists(BastionError):
    code = "already_exists"
    http_status = 409
    exit_code = 5


class CompareFailed(BastionError):
    code = "compare_failed"
    http_status = 409
    exit_code = 6


class BadParameter(BastionError):
    code = "bad_parameter"
    http_status = 400
    exit_code = 2


class AccessDenied(BastionError):
    code = "access_denied"
    http_status = 403
    exit_code = 3


class AuthenticationFailed(BastionError):
    code = "authentication_failed"
    http_status = 401
    exit_code = 3


class MFARequired(AuthenticationFailed):
    """The request needs a WebAuthn assertion bound to it: answer ``challenge`` and retry.

    The API sends ``challenge`` (WebAuthn request options) and ``scope`` beside code and message.
    """

    code = "mfa_required"

    def __init__(
        self, message: str, challenge: dict[str, object] | None = None, scope: str = ""
    ) -> None:
        super().__init__(message)
        self.challenge = challenge or {}
        self.scope = scope


class ConnectionProblem(BastionError):
    code = "connection_problem"
    http_status = 503
    exit_code = 7


class LimitExceeded(BastionError):
    code = "limit_exceeded"
    http_status = 429
    exit_code = 8


class ProtocolError(BastionError):
    """Never raised directly: use LocalProtocolError or RemoteProtocolError."""

    code = "protocol_error"


class LocalProtocolError(ProtocolError):
    pass


class RemoteProtocolError(ProtocolError):
    code = "remote_protocol_error"
    http_status = 400


_BY_CODE: dict[str, type[BastionError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        CompareFailed,
        BadParameter,
        AccessDenied,
        AuthenticationFailed,
        MFARequired,
        ConnectionProblem,
        LimitExceeded,
        RemoteProtocolError,
    )
}


def error_from_code(code: str, message: str) -> BastionError:
    """Rebuild the error an API peer reported (``{"error": {"code", "message"}}``)."""
    return _BY_CODE.get(code, BastionError)(message)
