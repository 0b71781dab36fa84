"""The SQLite writer process: ``python -m bastion.backend.sqlite_child FD PATH BUSY_TIMEOUT``.

Layer: backend (IO shell). Started by :class:`bastion.backend.sqlite_writer.ProcessWriter`,
never by hand. It opens the store on ``PATH`` (the same ``_Store`` the worker thread runs),
answers ``("ok", None)`` or the error, then serves ``(method, args)`` requests from the socket
``FD`` one at a time until the socket closes. sqlite3 errors become Bastion errors here
(:func:`bastion.backend.sqlite._map_sqlite_errors`), so they cross the socket with the same
operator-facing messages as on the thread.
"""

from __future__ import annotations

import functools
import io
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from bastion.backend.sqlite import _map_sqlite_errors, _Store
from bastion.backend.sqlite_writer import answer_for, encode, read_message, write_message


def serve(
    reader: io.BufferedIOBase,
    writer: io.BufferedIOBase,
    path: str,
    open_store: Callable[[], Any],
) -> None:
    """Open the store, answer whether that worked, then answer each request until ``reader``
    ends. Every error of a call goes back to its caller; none ends the loop."""
    try:
        with _map_sqlite_errors(path):
            store = open_store()
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which raises it
        write_message(writer, answer_for(exc))
        return
    write_message(writer, ("ok", None))
    try:
        while (request := read_message(reader)) is not None:
            method, args = request
            try:
                with _map_sqlite_errors(path):
                    answer: tuple[str, object] = ("ok", getattr(store, method)(*args))
            except Exception as exc:  # noqa: BLE001 - every error goes back to its caller
                answer = answer_for(exc)
            try:
                frame = encode(answer)
            except Exception as exc:  # noqa: BLE001 - a result that cannot cross (a bug)
                frame = encode(answer_for(exc))
            writer.write(frame)
            writer.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon is gone: nothing to answer
    finally:
        store.db.close()


def main(argv: list[str]) -> int:
    # The daemon stops us by closing the socket, after its own last writes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, path, busy_timeout = argv
    stream = socket.socket(fileno=int(fd)).makefile("rwb")
    serve(stream, stream, path, functools.partial(_Store, path, float(busy_timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
