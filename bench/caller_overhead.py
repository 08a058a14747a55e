"""CPU cost per record of the core call path (ChatCaller.complete against an in-memory transport, no network).

    python bench/caller_overhead.py --records 3000 --repeat 5
    PYTHONPATH=/path/to/other/checkout python bench/caller_overhead.py   # the same on another version, to compare

Prints one row per repeat and the median: microseconds of CPU per record (process time), which is what the
hardening of issue 16 adds to (two asyncio.timeout scopes, the response-size hooks, the breaker, scrubbing of
live secrets). Run both versions side by side in one window and compare the medians; absolute figures depend on
the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx2

from client.auth import LocalTokenSource
from client.caller import ChatCaller
from client.config import ClientConfig, Target
from schemas.records import InputRecord

BODY = json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 400},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}).encode()


async def one_run(n: int) -> float:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=BODY,
                                                                     headers={"content-type": "application/json"}))
    config = ClientConfig(target=Target("http://bench.invalid/v1", "local_tokens"), model="m")
    async with ChatCaller(config, http_client=httpx2.AsyncClient(transport=transport),
                          token_source=LocalTokenSource()) as caller:
        records = [InputRecord(id=f"r{i}", prompt=f"prompt {i}") for i in range(n)]
        await caller.complete(records[0])  # warm-up
        started = time.process_time()
        for start in range(0, n, 64):
            await asyncio.gather(*(caller.complete(r) for r in records[start:start + 64]))
        return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = [asyncio.run(one_run(args.records)) for _ in range(args.repeat)]
    print("| run | CPU µs per record |\n|---|---|")
    for i, us in enumerate(rows, 1):
        print(f"| {i} | {us:.0f} |")
    print(f"| median | {statistics.median(rows):.0f} |")


if __name__ == "__main__":
    main()
