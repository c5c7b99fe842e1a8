"""Run the fake Messages API on its own: a local stand-in for development, not Claude.

    python -m tests.support.fake_anthropic [--host 127.0.0.1] [--port N]
        [--answer-model NAME] [--delay S] [--requests-per-minute N]
        [--input-tokens-per-minute N] [--output-tokens-per-minute N]
        [--burst-requests N] [--batch-latency S] [--min-cache-tokens N]

It prints its URL (for ANTHROPIC_BASE_URL) and serves until interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from tests.support.fake_anthropic.cache import MIN_CACHE_TOKENS
from tests.support.fake_anthropic.limits import RateLimits
from tests.support.fake_anthropic.server import FakeAnthropic


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_anthropic",
        description="A local stand-in for the Anthropic Messages API, for development only: "
        "every answer is made up, no model is called.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--answer-model",
        help="the `model` of every answer, so results show they came from the stand-in "
        "(default: the model requested)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    for name in ("requests", "input-tokens", "output-tokens"):
        parser.add_argument(
            f"--{name}-per-minute", type=int, help=f"{name.replace('-', ' ')} a minute (no limit)"
        )
    parser.add_argument("--burst-requests", type=int, help="request bucket size (a minute's)")
    parser.add_argument(
        "--batch-latency", type=float, default=1.0, help="seconds a Message Batch runs (1)"
    )
    parser.add_argument(
        "--min-cache-tokens",
        type=int,
        default=MIN_CACHE_TOKENS,
        help=f"shortest prompt prefix cached ({MIN_CACHE_TOKENS})",
    )
    return parser.parse_args(argv)


def banner(fake: FakeAnthropic, limits: RateLimits) -> str:
    """What the stand-in says about itself when it starts."""
    per_minute = {
        "requests": limits.requests_per_minute,
        "input tokens": limits.input_tokens_per_minute,
        "output tokens": limits.output_tokens_per_minute,
    }
    shown = ", ".join(f"{n:,} {name}/min" for name, n in per_minute.items() if n is not None)
    return "\n".join(
        [
            "fake-anthropic: a LOCAL STAND-IN for the Anthropic Messages API, for development",
            "only. It is not Claude: no model is called and every answer is made up.",
            f"  url:          {fake.url}",
            f"  use it with:  ANTHROPIC_BASE_URL={fake.url}",
            f"  answers name: {fake.answer_model or 'the model requested'}",
            f"  rate limits:  {shown or 'none'}",
            "Serving until interrupted (Ctrl-C).",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 1 if it cannot listen, 2 on a
    bad limit."""
    args = parse_args(argv)
    try:
        limits = RateLimits(
            requests_per_minute=args.requests_per_minute,
            input_tokens_per_minute=args.input_tokens_per_minute,
            output_tokens_per_minute=args.output_tokens_per_minute,
            burst_requests=args.burst_requests,
        )
    except ValueError as exc:
        print(f"fake-anthropic: {exc}", file=sys.stderr)
        return 2
    fake = FakeAnthropic(
        host=args.host,
        port=args.port,
        delay_s=args.delay,
        answer_model=args.answer_model,
        limits=limits,
        batch_latency_s=args.batch_latency,
        min_cache_tokens=args.min_cache_tokens,
    )
    try:
        fake.start()
    except OSError as exc:
        print(f"fake-anthropic: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(banner(fake, limits), flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    fake.stop()
    print("fake-anthropic: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
