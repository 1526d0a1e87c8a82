"""One application process of the scale benchmark: the case_8842 graph on DualSaver.

``python -m benchmarks.scale_app --redis-url redis+cluster://... --postgres-url ...``

The saver runs write_behind with its in-process flusher off (separate flush workers
drain the outbox) and no backpressure (``max_lag`` out of reach), so the rate measured is
the application's own. Values are stored uncompressed (``compression=None``): the
benchmark measures the raw bytes, then compresses what was stored to say what
compression would save (``scale_probe``).

The process warms up (one invoke), prints ``ready``, waits for a ``go`` line on stdin
so every process starts together, runs ``--concurrency`` invokes at a time on fresh
threads for ``--seconds``, and prints one JSON line with what it did and the CPU it used
meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.workloads import case_graph, new_thread, thread_config  # noqa: E402
from langgraph_dualsaver.chain.saver import DualSaver  # noqa: E402

NO_BACKPRESSURE = 10**9


async def run(args: argparse.Namespace) -> dict[str, Any]:
    graph = case_graph()
    async with DualSaver.from_conn_string(
        args.redis_url,
        args.postgres_url,
        mode="write_behind",
        prefix=args.prefix,
        background_flush=False,
        max_lag=NO_BACKPRESSURE,
        compression=None,
    ) as saver:
        compiled = graph.build(saver)
        await compiled.ainvoke(graph.new_input(), thread_config(new_thread(f"warm{args.index}")))
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != "go":
            raise SystemExit(f"expected 'go' on stdin, got {line!r}")
        cpu_started = time.process_time()
        started = time.perf_counter()
        deadline = started + args.seconds
        invokes = [0] * args.concurrency

        async def loop(slot: int) -> None:
            while time.perf_counter() < deadline:
                config = thread_config(new_thread(f"scale{args.index}-{slot}"))
                await compiled.ainvoke(graph.new_input(), config)
                invokes[slot] += 1

        await asyncio.gather(*(loop(slot) for slot in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    done = sum(invokes)
    steps = done * graph.steps_per_invoke
    return {
        "index": args.index,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 3),
        "invokes": done,
        "steps_per_invoke": graph.steps_per_invoke,
        "steps": steps,
        "steps_per_s": round(steps / elapsed, 1),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_step": round(cpu / steps * 1000, 4) if steps else None,
        "graph": graph.source,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--postgres-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--index", type=int, default=0)
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
