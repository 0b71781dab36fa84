"""The daemon's supervisor: start the enabled services, wait for a signal, shut down cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import structlog

from bastion.auth.service import AuthService
from bastion.config.schema import FileConfig

__all__ = ["run"]

log = structlog.get_logger("bastion.process")


async def run(config: FileConfig, on_ready: Callable[[AuthService, list[str]], None]) -> None:
    """Run until SIGINT/SIGTERM. ``on_ready`` is called once the API is listening."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = await AuthService.open(config)
    try:
        created = await service.start()
        on_ready(service, created)
        async with asyncio.TaskGroup() as group:
            refresher = group.create_task(
                service.refresh_admin_identity_forever(), name="admin-identity-refresh"
            )
            await stop.wait()
            refresher.cancel()
    finally:
        log.info("shutting down")
        await service.close()
