"""Run an asyncio TCP server on its own loop in a thread, so tests and worker
subprocesses can reach it while the test's own loop does other work."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ThreadedServer:
    """A TCP server on `host` (a free port when `port` is 0), served from a thread.

    `backlog` is the listen queue: raise it for servers that take hundreds of
    connections at once, or the kernel drops the extra SYNs and clients stall
    for a second before retrying.
    """

    def __init__(
        self,
        handler: Handler,
        port: int = 0,
        name: str = "test-server",
        host: str = "127.0.0.1",
        backlog: int = 100,
    ) -> None:
        self.handler = handler
        self.port = port
        self.name = name
        self.host = host
        self.backlog = backlog
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        """Start serving; returns the port. Raises what stopped the server from
        starting (an address in use: OSError)."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            self.loop = asyncio.new_event_loop()

            async def main() -> None:
                try:
                    self._server = await asyncio.start_server(
                        self.handler, self.host, self.port, backlog=self.backlog
                    )
                except OSError as exc:
                    failed.append(exc)
                    ready.set()
                    return
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                async with self._server:
                    await self._server.serve_forever()

            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(main())
            # Stopped: end what still runs (open connections, background work), or it
            # is destroyed pending when the process exits.
            leftover = asyncio.all_tasks(self.loop)
            for task in leftover:
                task.cancel()
            if leftover:
                self.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))

        threading.Thread(target=serve, daemon=True, name=self.name).start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.name} did not start")
        if failed:
            raise failed[0]
        return self.port

    def stop(self) -> None:
        """Stop serving; tasks still running on the server's loop are cancelled."""
        if self.loop and self._server:
            self.loop.call_soon_threadsafe(self._server.close)
