"""Network addresses as the configuration and the command line write them.

Layer: ``protocols`` (pure, stdlib only).
"""

from __future__ import annotations

__all__ = ["parse_addr"]


def parse_addr(value: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``host`` or ``[v6]:port`` -> (host, port).

    Raises:
        ValueError: the port is not a number in 0..65535, or the host is empty.
    """
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"invalid address {value!r}: port must be a number") from None
    if not 0 <= port <= 65535 or not host:
        raise ValueError(f"invalid address {value!r}: expected host:port")
    return host, port
