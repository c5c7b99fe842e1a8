"""A server-sent events parser, fed one line at a time (the WHATWG event-stream format)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its `event` type (`message` unless named), `data` (the data
    lines joined with newlines) and `id`."""

    event: str
    data: str
    id: str | None = None


class EventStreamParser:
    """Turns the lines of a `text/event-stream` body into events.

    `feed()` takes each line without its line ending and returns an event when a blank
    line ends one. Comments (`: keep-alive`) and unknown fields are skipped.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line; the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._last_id)
        self._event, self._data = "", []
        return event
