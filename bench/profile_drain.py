"""Profile one side of the drain-rate benchmark with py-spy: where a worker's CPU goes per job.

    .venv/bin/python -m bench.profile_drain [--side ours] [--jobs 5000] [--top 40]

Starts the side's worker, attaches `py-spy record` to it (250 Hz, `--seconds` long, idle
frames left out) once it is up, queues `--jobs` trivial jobs (as `bench.drain` does), and
prints the frames with the largest inclusive share of the samples, then the largest self
share. The raw collapsed stacks go to `bench/results/profile_<side>.txt` (flamegraph.pl or
speedscope read them). py-spy comes with the `bench` extra.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

from redis import Redis

from bench.common import OUR_BIN, RESULTS, Children, log
from bench.drain import SIDES, enqueue, worker_command
from bench.workers import DONE_KEY
from tests.support.services import RedisServer


def top_frames(collapsed: Path, top: int) -> str:
    """Inclusive and self shares of the frames in a py-spy `raw` (collapsed) profile."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=SIDES, default="ours")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=20, help="how long py-spy samples")
    args = parser.parse_args()
    out = RESULTS / f"profile_{args.side}.txt"
    server = RedisServer()
    children = Children(RESULTS / "profile_logs")
    try:
        server.start()
        command, env = worker_command(args.side, server.url)
        worker = children.start(command, env, args.side)
        time.sleep(4)  # its start-up (imports, connections) stays out of the profile
        spy = [str(OUR_BIN / "py-spy"), "record", "--rate", "250", "--format", "raw",
               "--output", str(out), "--subprocesses", "--duration", str(args.seconds),
               "--pid", str(worker.pid)]  # fmt: skip
        profiler = children.start(spy, env, f"py-spy-{args.side}")
        time.sleep(1)
        enqueue(args.side, server.url, args.jobs)
        deadline = time.monotonic() + args.seconds
        with Redis.from_url(server.url) as r:
            while int(r.get(DONE_KEY) or 0) < args.jobs and time.monotonic() < deadline:
                time.sleep(0.05)
            log(f"{int(r.get(DONE_KEY) or 0)} of {args.jobs} jobs done; waiting for py-spy")
        profiler.wait(args.seconds + 30)
    finally:
        children.stop_all()
        server.stop()
    print(top_frames(out, args.top))
    print(f"\ncollapsed stacks: {out}")


if __name__ == "__main__":
    main()
