"""What a state-schema upgrade on read costs: ``aget_tuple`` p50 with and without it.

    python benchmarks/upgrade_cost.py                      # starts its own Valkey + PostgreSQL
    python benchmarks/upgrade_cost.py --samples 200 --out benchmarks/results/upgrade_cost.md
    python benchmarks/upgrade_cost.py --redis-url redis://... --postgres-url postgresql://...

Two case_8842 threads paused at the human review, one written by version 1 of the
state schema (no ``currency`` in billing), one by version 2. ``DualSaver.aget_tuple`` of
the latest checkpoint (a Redis hit) is timed in three settings, taking turns sample by
sample so a noisy neighbour slows them alike:

* off: no ``state_schema``, the version 1 thread (what the saver cost before);
* stamped: ``state_schema=STATE_SCHEMA`` on the version 2 thread (nothing to upgrade:
  the cost every read pays once the setting is on);
* upgrade: ``state_schema=STATE_SCHEMA`` on the version 1 thread (the upgrade runs).

Only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from langchain_core.runnables import RunnableConfig  # noqa: E402

from langgraph_dualsaver import DualSaver, StateSchema  # noqa: E402
from langgraph_dualsaver.app import (  # noqa: E402
    LARGE_DUPLICATE_CUSTOMER,
    STATE_SCHEMA,
    build_graph,
    new_case,
    new_thread_id,
    thread_config,
)
from langgraph_dualsaver.app.services import BillingService, SupportServices  # noqa: E402
from langgraph_dualsaver.embedded import EmbeddedPostgres, EmbeddedValkey  # noqa: E402
from tests.servers import remove_tree, throwaway_dir  # noqa: E402

SETTINGS = ("off", "stamped", "upgrade")


class FirstReleaseBilling(BillingService):
    """Version 1's billing section: no ``currency``."""

    def review(self, customer_id: str) -> Any:
        section = dict(super().review(customer_id))
        del section["currency"]
        return section


async def paused_case(saver: DualSaver, services: SupportServices | None) -> RunnableConfig:
    config = thread_config(new_thread_id())
    await build_graph(saver, services=services).ainvoke(new_case(LARGE_DUPLICATE_CUSTOMER), config)
    return config


async def timed(saver: DualSaver, config: RunnableConfig) -> float:
    began = time.perf_counter()
    found = await saver.aget_tuple(config)
    spent = (time.perf_counter() - began) * 1000
    assert found is not None
    return spent


async def run(redis_url: str, postgres_url: str, samples: int) -> dict[str, float]:
    prefix = f"upgrade-cost-{uuid.uuid4().hex[:8]}"

    def open_(schema: StateSchema | None) -> DualSaver:
        return DualSaver.from_conn_string(
            redis_url, postgres_url, prefix=prefix, state_schema=schema
        )

    async with open_(StateSchema(version=1)) as v1, open_(STATE_SCHEMA) as v2, open_(None) as off:
        await v1.asetup()
        old = await paused_case(v1, SupportServices(billing=FirstReleaseBilling()))
        new = await paused_case(v2, None)
        cases = {"off": (off, old), "stamped": (v2, new), "upgrade": (v2, old)}
        upgraded = await v2.aget_tuple(old)
        assert upgraded is not None and upgraded.metadata.get("schema_upgraded_from") == 1
        spent: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for i in range(samples + samples // 10):
            for name in SETTINGS:
                ms = await timed(*cases[name])
                if i >= samples // 10:  # the first tenth warms connections and caches up
                    spent[name].append(ms)
    return {name: statistics.median(values) for name, values in spent.items()}


def report(p50: dict[str, float], samples: int) -> str:
    lines = [
        "# What a state-schema upgrade on read costs",
        "",
        f"`python benchmarks/upgrade_cost.py --samples {samples}`: `DualSaver.aget_tuple` of a "
        "case_8842 thread paused at the human review (a Redis hit), "
        f"{samples} samples per setting, the settings taking turns.",
        "",
        "| setting | p50 ms | vs off |",
        "| --- | ---: | ---: |",
    ]
    labels = {
        "off": "off: no `state_schema`",
        "stamped": "stamped: `state_schema`, checkpoint at the current version",
        "upgrade": "upgrade: `state_schema`, checkpoint at version 1 (upgraded on read)",
    }
    for name in SETTINGS:
        lines.append(f"| {labels[name]} | {p50[name]:.3f} | {p50[name] / p50['off']:.2f}x |")
    lines += [
        "",
        f"An upgrade on read costs {p50['upgrade'] / p50['off']:.2f}x a read without it "
        f"({(p50['upgrade'] - p50['off']) * 1000:+.0f} us at p50); a checkpoint already at "
        f"the current version {p50['stamped'] / p50['off']:.2f}x. Only ratios within one "
        "run mean anything.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="a running Redis/Valkey; default: start one")
    parser.add_argument("--postgres-url", help="a running PostgreSQL; default: start one")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--out", type=Path, help="write the markdown report here too")
    args = parser.parse_args(argv)
    workdir = throwaway_dir("upgrade-cost-")
    started: list[EmbeddedValkey | EmbeddedPostgres] = []
    try:
        redis_url, postgres_url = args.redis_url, args.postgres_url
        if redis_url is None:
            started.append(EmbeddedValkey(workdir / "valkey").start())
            redis_url = started[-1].url
        if postgres_url is None:
            started.append(EmbeddedPostgres(workdir / "postgres").start())
            postgres_url = started[-1].url
        p50 = asyncio.run(run(redis_url, postgres_url, args.samples))
    finally:
        for server in reversed(started):
            server.stop()
        remove_tree(workdir)
    text = report(p50, args.samples)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
