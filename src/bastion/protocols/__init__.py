"""Pure protocol code: bytes in, decisions and events out; no sockets, no asyncio, no clock.

Layer: ``protocols`` sits under ``proxy``/``tunnel``/``agent`` (the IO shells) and knows nothing
about them. Every parser here raises only :class:`bastion.errors.RemoteProtocolError` on bad peer
input (and :class:`bastion.errors.LocalProtocolError` when our own code misuses it), so the IO
layer has exactly one exception to map to "close the connection".

* :mod:`.detect` -- what protocol a connection on the shared port speaks; PROXY protocol headers.
* :mod:`.clienthello` -- SNI and ALPN from a TLS ClientHello, before the handshake.
* :mod:`.muxframe` -- the reverse-tunnel multiplexing protocol between proxy and agents.
* :mod:`.alpn` -- the ALPN names of the shared port (one home); :mod:`.sshroute` -- the
  ``bastion-ssh/1`` request and reply lines, and which node a request names; :mod:`.addr` --
  ``host:port`` as configurations write it.

The names of :mod:`.clienthello` and :mod:`.muxframe` load on first use (PEP 562): ``bsh proxy
ssh``, which OpenSSH starts for every connection, imports :mod:`.alpn` and :mod:`.sshroute`
without paying for the tunnel's codec.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from bastion.protocols.detect import (  # eager: the function detect() shadows the submodule
    MAX_PEEK,
    PROXY_V1_MAX_LENGTH,
    PROXY_V2_MAX_LENGTH,
    Detected,
    Kind,
    NeedMore,
    ProxyAddress,
    ProxyCommand,
    ProxyHeader,
    build_proxy_header_v1,
    build_proxy_header_v2,
    detect,
    parse_proxy_header,
)

if TYPE_CHECKING:
    from bastion.protocols.clienthello import MAX_CLIENT_HELLO, ClientHello, parse_client_hello
    from bastion.protocols.muxframe import (
        DEFAULT_INITIAL_WINDOW,
        MAX_PAYLOAD,
        DataReceived,
        Event,
        GoAway,
        MuxConnection,
        PingReceived,
        PongReceived,
        StreamClosed,
        StreamEOF,
        StreamOpened,
        StreamStats,
        WindowUpdated,
    )

__all__ = [
    "DEFAULT_INITIAL_WINDOW",
    "MAX_CLIENT_HELLO",
    "MAX_PAYLOAD",
    "MAX_PEEK",
    "PROXY_V1_MAX_LENGTH",
    "PROXY_V2_MAX_LENGTH",
    "ClientHello",
    "DataReceived",
    "Detected",
    "Event",
    "GoAway",
    "Kind",
    "MuxConnection",
    "NeedMore",
    "PingReceived",
    "PongReceived",
    "ProxyAddress",
    "ProxyCommand",
    "ProxyHeader",
    "StreamClosed",
    "StreamEOF",
    "StreamOpened",
    "StreamStats",
    "WindowUpdated",
    "build_proxy_header_v1",
    "build_proxy_header_v2",
    "detect",
    "parse_client_hello",
    "parse_proxy_header",
]

_CLIENTHELLO = frozenset({"MAX_CLIENT_HELLO", "ClientHello", "parse_client_hello"})


def __getattr__(name: str) -> Any:
    if name in _CLIENTHELLO:
        return getattr(import_module(f"{__name__}.clienthello"), name)
    if name in __all__:  # the rest of the names: the tunnel's codec
        return getattr(import_module(f"{__name__}.muxframe"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
