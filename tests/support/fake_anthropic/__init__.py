"""A fake of the Anthropic Messages API that speaks the real wire format over HTTP.

It runs its own asyncio HTTP/1.1 server in a thread, so the real `anthropic`
SDK talks to it through `ANTHROPIC_BASE_URL`, from this process or from
worker subprocesses. Tests script its answers in order with `script(...)`:

    "ok"            a normal message (the default once the script is used up)
    "429:7"         rate limited, with `retry-after: 7`
    "529"           overloaded_error
    "500"           api_error
    "400"           invalid_request_error
    "400:too_long"  invalid_request_error: prompt is too long
    "401"           authentication_error
    "slow:3"        a normal message after 3 s
    "drop"          close the connection without answering
    "expired"       in a Message Batch, the entry expires (a single call: "ok")

Without a script, a request whose body holds `fake-answers[<key>]=<a>,<b>,...`
(put in a document's text) gets those answers in order, counted per key, then
"ok"; an answer ending in `*` repeats forever (`fake-answers[d7]=400*`). So a
load of many concurrent jobs can say, per document, what Claude will answer.

Each entry of a Message Batch is answered the same way, in order, when it
falls due: an error answer makes it `errored` with that error, "drop" an
`errored` api_error, "expired" `expired`, anything else `succeeded`.

Like the real API it enforces rate limits (`limit(...)`, none by default),
sends `anthropic-ratelimit-*` headers on every answer, counts tokens (about 4
characters a token), caches prompt prefixes marked with `cache_control`, and
serves the Message Batches API. Modules: `server` (the class, its options and
routes), `wire` (HTTP), `answers`, `limits`, `tokens`, `cache`, `batches`;
`python -m tests.support.fake_anthropic` runs it on its own for development.
"""

from tests.support.fake_anthropic.limits import RateLimits
from tests.support.fake_anthropic.server import FakeAnthropic

__all__ = ["FakeAnthropic", "RateLimits"]
