"""A TCP proxy in front of a test server, to take it away or slow it down on cue.

`down = True` makes it close every connection (the server looks unreachable);
`delay_s` holds each chunk it forwards for that long (a slow network);
`lose_answers = n` drops the next n answers from the server, closing the connection
instead of passing each on (the server did the work; its client never hears of it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tests.support.threaded import ThreadedServer


@dataclass
class Proxy:
    target_port: int
    port: int = 0
    down: bool = False
    delay_s: float = 0.0
    lose_answers: int = 0
    answers_lost: int = 0
    refused: int = 0  # connections closed at once while down: someone tried
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: ThreadedServer | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self._runner = ThreadedServer(self._handle, self.port, "proxy")
        self.port = self._runner.start()
        self._loop = self._runner.loop
        return self

    def set_down(self, down: bool) -> None:
        """Take the server away (closing open connections too) or bring it back."""
        self.down = down
        if down and self._loop:
            self._loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool = False
        ) -> None:
            try:
                while data := await src.read(65536):
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    if self.down:
                        break
                    if answers and self.lose_answers > 0:
                        self.lose_answers -= 1
                        self.answers_lost += 1
                        writer.close()
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer, answers=True))
        self._writers -= {writer, up_writer}
