"""The floor of a TLS-terminating relay in Python, for ``bench/db.py`` to run beside our proxy.

A uvloop process that terminates the client's TLS (with the database's server certificate) and
opens its own TLS to the database (with a db-CA client certificate), after the protocol's TLS
preamble (PostgreSQL: the client's SSLRequest answered ``S``, the same request to the server;
MySQL: the server's greeting passed on, the client's SSLRequest passed back), then moves bytes.
No parsing, no authorization, no audit: everything our proxy does per statement beyond this
relay is the gap between the two; the gap between this relay and a direct connection is two
more TLS terminations and one more hop in Python on this machine.

Run: ``python bench/tls_floor.py {postgres|mysql} PORT DB_PORT CERT KEY CA CLIENT_CERT
CLIENT_KEY`` (listens on 127.0.0.1:PORT until killed).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys

from bastion.runtime import run as run_loop
from bastion.runtime import tune_runtime

_SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


class _Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.peer: _Side | None = None
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        assert peer is not None
        if peer.transport is None:
            peer.early.append(data)  # the other leg's TLS is not up yet
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def _exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    """Read ``n`` bytes, not one more: what follows is the peer's TLS."""
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise ConnectionError("closed during the preamble")
        data += chunk
    return data


async def _mysql_packet(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    header = await _exactly(loop, sock, 4)
    return header + await _exactly(loop, sock, int.from_bytes(header[:3], "little"))


async def _preamble(
    protocol: str, loop: asyncio.AbstractEventLoop, client: socket.socket, server: socket.socket
) -> None:
    if protocol == "postgres":
        if await _exactly(loop, client, 8) != _SSL_REQUEST:
            raise ConnectionError("the client did not ask for TLS")
        await loop.sock_sendall(client, b"S")
        await loop.sock_sendall(server, _SSL_REQUEST)
        if await _exactly(loop, server, 1) != b"S":
            raise ConnectionError("the database refused TLS")
    else:
        await loop.sock_sendall(client, await _mysql_packet(loop, server))
        await loop.sock_sendall(server, await _mysql_packet(loop, client))


async def serve(protocol: str, port: int, db_port: int, files: list[str]) -> None:
    cert, key, ca, client_cert, client_key = files
    loop = asyncio.get_running_loop()
    inbound = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    inbound.load_cert_chain(cert, key)
    outbound = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    outbound.check_hostname = False  # the bench's database certificate names 127.0.0.1 or not
    outbound.load_verify_locations(ca)
    outbound.load_cert_chain(client_cert, client_key)

    async def relay(client: socket.socket) -> None:
        server = socket.socket()
        try:
            client.setblocking(False)
            server.setblocking(False)
            await loop.sock_connect(server, ("127.0.0.1", db_port))
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await _preamble(protocol, loop, client, server)
            a, b = _Side(), _Side()
            a.peer, b.peer = b, a
            inside, _ = await loop.connect_accepted_socket(lambda: a, client, ssl=inbound)
            outside, _ = await loop.create_connection(
                lambda: b, sock=server, ssl=outbound, server_hostname="db"
            )
            for side, transport in ((a, inside), (b, outside)):
                side.transport = transport
                for data in side.early:
                    transport.write(data)
        except (OSError, ConnectionError) as exc:
            print(f"tls_floor: {exc}", file=sys.stderr)
            client.close()
            server.close()

    listener = socket.create_server(("127.0.0.1", port))
    listener.setblocking(False)
    connections: set[asyncio.Task[None]] = set()
    while True:
        client, _ = await loop.sock_accept(listener)
        task = asyncio.ensure_future(relay(client))
        connections.add(task)
        task.add_done_callback(connections.discard)


def main() -> None:
    protocol, port, db_port, *files = sys.argv[1:]
    if protocol not in ("postgres", "mysql") or len(files) != 5:
        sys.exit(__doc__)
    tune_runtime()
    run_loop(serve(protocol, int(port), int(db_port), files))


if __name__ == "__main__":
    main()
