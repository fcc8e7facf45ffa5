"""A LocalPlatform hosted in an asyncio task of its own, for module-scoped fixtures."""

from __future__ import annotations

import asyncio

import anyio

from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings

__all__ = ["PlatformHost"]


class PlatformHost:
    """Run a LocalPlatform in an asyncio task of its own, for fixtures set up and torn down in different tasks.

    The platform's task group must be exited by the task that entered it.
    """

    def __init__(self, settings: LocalPlatformSettings) -> None:
        self._settings = settings
        self._stop = asyncio.Event()
        self._started: asyncio.Future[LocalPlatform] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LocalPlatform:
        self._task = asyncio.create_task(self._run())
        with anyio.fail_after(60):
            return await self._started

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        with anyio.fail_after(60):
            await self._task

    async def _run(self) -> None:
        try:
            async with LocalPlatform(self._settings) as platform:
                self._started.set_result(platform)
                await self._stop.wait()
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            raise
