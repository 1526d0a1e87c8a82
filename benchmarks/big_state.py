"""Big state: a chat thread growing to 500 messages of about 1 KB, with a 2 MB tool output
every 50 steps, through a LangGraph graph; what each saver stores, and what a step costs.

    python benchmarks/big_state.py            # full size: benchmarks/results/big_state.{md,json}
    python benchmarks/big_state.py --quick    # seconds: benchmarks/results/quick/big_state.*

Savers, in one run against the same servers, each with its own PostgreSQL database and
Redis prefix: the official ``AsyncPostgresSaver`` (langgraph-checkpoint-postgres), and
``DualSaver`` write_behind with compression and offload off, with compression on (zstd,
the default ``Compression()``), with compression and whole-value offload on (``Offload``
to a local directory, ``chunk_bytes=None``: each value of 256 KiB or more once
compressed is one object), and with compression and chunked offload (the default
chunking, 16 KiB average, from 64 KiB of serialized bytes: see ``CHUNKED_MIN_BYTES``).
Offload is measured once ``langgraph_dualsaver.Offload`` exists, else recorded as not
measured, with the reason.

The workload (``Workload``, pure): a step is one ``ainvoke``; its node appends one message
(user and assistant take turns) of sentences drawn from a fixed made-up vocabulary with
Zipf weights and a seeded RNG, so the text compresses about as English does. Every
``tool_every`` steps the node also writes a tool output (a JSON search result, different
each time) to a ``tool_output`` channel of its own: the latest result, as an agent keeps a
retrieved document. (In ``messages`` it would be stored again with every later
checkpoint by every saver: 5 GB by step 500 for the official one.) The savers take turns
step by step (the order rotates), so a noisy neighbour slows them alike.

Measured per saver, every ``sample_every`` steps after the write_behind outbox drained:
Redis: ``MEMORY USAGE key SAMPLES 0`` summed over every key under the saver's prefix;
PostgreSQL: ``pg_total_relation_size`` (heap, TOAST, indexes) summed over every table of
the saver's own database (or schema), the same for the official saver's tables; the
object store: the size of the files under the offload directory. Step latency: the wall
time of ``ainvoke`` (p50, p95). Only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage  # noqa: E402
from langgraph.checkpoint.base import BaseCheckpointSaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.graph.message import add_messages  # noqa: E402
from langgraph.graph.state import CompiledStateGraph  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from benchmarks.env import Servers, bench_servers, describe_machine, describe_servers  # noqa: E402
from benchmarks.savers import SAVERS, OpenSaver, SaverSpec, SaverUnavailable, open_saver  # noqa: E402
from benchmarks.workloads import new_thread, thread_config  # noqa: E402
from langgraph_dualsaver import Compression, DualSaver  # noqa: E402

__all__ = [
    "SIZES",
    "VARIANTS",
    "Size",
    "Variant",
    "Workload",
    "build_graph",
    "measure_savers",
    "object_bytes",
    "offload_class",
    "postgres_bytes",
    "redis_bytes",
    "render_markdown",
    "sizes_picture",
]

RESULTS = ROOT / "benchmarks" / "results"
OFFICIAL = next(spec for spec in SAVERS if spec.name == "official_postgres")
BYTES_AIM = 0.3
"""Stored bytes at the end, against the official saver's (issue 15)."""
LATENCY_AIM = 1.1
"""p50 step latency with compression (and offload), against DualSaver without them."""


@dataclass(frozen=True)
class Size:
    steps: int
    """Graph invokes; each appends one message, so also the messages at the end."""
    message_bytes: int = 1024
    tool_every: int = 50
    tool_bytes: int = 2 * 2**20
    sample_every: int = 50
    """Stored bytes are measured every this many steps (and at the end)."""


SIZES = {
    "full": Size(steps=500),
    # Tool outputs big enough that compressed they are still over Offload's 256 KiB.
    "quick": Size(steps=40, tool_every=20, tool_bytes=3 * 2**19, sample_every=20),
}


# -- the workload: pure ----------------------------------------------------------------


def _vocabulary(size: int = 4000, seed: int = 15) -> list[str]:
    """Made-up words of 2 to 10 letters, common letters more often: text drawn from them
    with Zipf weights compresses about as English does (a short real word list would
    flatter every compressor)."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(size)]


WORDS = _vocabulary()
CUM_WEIGHTS = list(itertools.accumulate(1 / rank for rank in range(1, len(WORDS) + 1)))


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, cum_weights=CUM_WEIGHTS, k=rng.randint(6, 18))
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(".....?!")


def text(rng: random.Random, size: int) -> str:
    """Sentences until ``size`` characters (ASCII), cut at a word boundary when possible."""
    parts: list[str] = []
    length = 0
    while length < size:
        sentence = _sentence(rng)
        parts.append(sentence)
        length += len(sentence) + 1
    out = " ".join(parts)[:size]
    cut = out.rfind(" ", size - 12)
    return out[:cut] + "." if cut > 0 else out


def chat_message(step: int, size: int = 1024) -> AnyMessage:
    """The message step ``step`` appends: the user's on even steps, the assistant's on odd."""
    rng = random.Random(1_000_003 * step + 7)
    kind = HumanMessage if step % 2 == 0 else AIMessage
    return kind(content=text(rng, size), id=f"m{step}")


def tool_output(call: int, size: int = 2 * 2**20) -> ToolMessage:
    """A search tool's result of about ``size`` bytes: JSON hits, different for each call."""
    rng = random.Random(2_000_003 * call + 11)
    hits = []
    length = 0
    while length < size:
        hit = {
            "id": f"{rng.getrandbits(64):016x}",
            "title": text(rng, 60),
            "url": f"https://kb.example.com/articles/{rng.getrandbits(32):08x}",
            "score": round(rng.random(), 4),
            "snippet": text(rng, 320),
        }
        hits.append(hit)
        length += len(json.dumps(hit)) + 2
    content = json.dumps({"query": text(rng, 40), "hits": hits})
    return ToolMessage(content=content, tool_call_id=f"call-{call}", id=f"tool-{call}")


class Workload:
    """Every message and tool output of a run, built once before anything is timed."""

    def __init__(self, size: Size) -> None:
        self.size = size
        self.messages = [chat_message(step, size.message_bytes) for step in range(size.steps)]
        self.tools = {
            step: tool_output(step // size.tool_every, size.tool_bytes)
            for step in range(size.steps)
            if (step + 1) % size.tool_every == 0
        }

    def update(self, step: int) -> dict[str, Any]:
        """What the node writes at ``step``."""
        written: dict[str, Any] = {"messages": [self.messages[step]]}
        if step in self.tools:
            written["tool_output"] = self.tools[step]
        return written

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self.size),
            "messages": len(self.messages),
            "message_chars_mean": round(
                sum(len(str(m.content)) for m in self.messages) / max(1, len(self.messages)), 1
            ),
            "tool_outputs": len(self.tools),
            "tool_output_chars": [len(str(t.content)) for t in self.tools.values()],
        }


class BigState(TypedDict, total=False):
    step: int
    messages: Annotated[list[AnyMessage], add_messages]
    tool_output: ToolMessage


def build_graph(checkpointer: BaseCheckpointSaver, workload: Workload) -> CompiledStateGraph:
    """One node, ``chat``: each invoke (``{"step": n}``) appends message ``n``, and every
    ``tool_every`` steps writes a tool output."""

    def chat(state: BigState) -> dict[str, Any]:
        return workload.update(state["step"])

    builder = StateGraph(BigState)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder.compile(checkpointer=checkpointer)


# -- the savers --------------------------------------------------------------------------


def offload_class() -> Any:
    """``langgraph_dualsaver.Offload``, or ``SaverUnavailable`` saying it is not there."""
    try:
        from langgraph_dualsaver import Offload  # type: ignore[attr-defined]
    except ImportError as exc:
        raise SaverUnavailable(f"langgraph_dualsaver.Offload is not importable: {exc}") from exc
    return Offload


@dataclass(frozen=True)
class Variant:
    """A DualSaver setting of the comparison."""

    name: str
    label: str
    compression: Compression | None
    offload_min_bytes: int | None = None
    """Offload values from this many bytes to a local directory; None: no offload."""
    chunk_bytes: int | None = None
    """``Offload.chunk_bytes``: None offloads values whole."""

    def settings(self) -> str:
        parts = ["mode='write_behind'", f"compression={self.compression!r}"]
        if self.offload_min_bytes is not None:
            parts.append(
                f"offload=Offload('file://<dir>', min_bytes={self.offload_min_bytes}, "
                f"chunk_bytes={self.chunk_bytes})"
            )
        else:
            parts.append("offload=None")
        return ", ".join(parts)

    def spec(self) -> SaverSpec:
        return SaverSpec(self.name, self.label, True, ("redis", "postgres"), self._open)

    @contextlib.asynccontextmanager
    async def _open(self, handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
        assert handle.servers is not None and handle.pg_dsn is not None
        options: dict[str, Any] = {"compression": self.compression}
        if self.offload_min_bytes is not None:
            directory = objects_dir(handle)
            directory.mkdir(parents=True, exist_ok=True)
            options["offload"] = offload_class()(
                directory.as_uri(), min_bytes=self.offload_min_bytes, chunk_bytes=self.chunk_bytes
            )
        async with DualSaver.from_conn_string(
            handle.servers.redis_url,
            handle.pg_dsn,
            mode="write_behind",
            prefix=handle.prefix,
            **options,
        ) as saver:
            await saver.asetup()
            yield saver


CHUNKED_MIN_BYTES = 64 * 1024
"""Chunked offload from 64 KiB of serialized bytes (about 55 messages here): below it a
value is a few chunks at most and stays in the tiers, compressed; above it each step
stores about two new chunks instead of the whole history again. Compared once at 250
messages (this workload, 16 KiB chunks, against the official saver / DualSaver
without compression): min_bytes 32 KiB 0.28x durable bytes, p50 1.11x; 64 KiB 0.29x,
0.97x; 256 KiB (``Offload``'s default) 0.50x, 0.86x; 64 KiB with 32 KiB chunks 0.38x,
0.99x. 64 KiB: the bytes of 32 KiB without its cost per step."""
CHUNK_BYTES = 16 * 1024
"""``Offload``'s default average chunk."""

VARIANTS = (
    Variant("dual_plain", "DualSaver write_behind, no compression, no offload", None),
    Variant("dual_zstd", "DualSaver write_behind, compression", Compression()),
    Variant(
        "dual_zstd_offload",
        "DualSaver write_behind, compression + whole-value offload",
        Compression(),
        offload_min_bytes=256 * 1024,
    ),
    Variant(
        "dual_zstd_chunked",
        "DualSaver write_behind, compression + chunked offload",
        Compression(),
        offload_min_bytes=CHUNKED_MIN_BYTES,
        chunk_bytes=CHUNK_BYTES,
    ),
)


def objects_dir(handle: OpenSaver) -> Path:
    assert handle.servers is not None
    return handle.servers.workdir / f"objects-{handle.prefix}"


# -- what the stores hold ----------------------------------------------------------------


async def redis_bytes(client: aioredis.Redis, prefix: str) -> tuple[int, int]:
    """``MEMORY USAGE key SAMPLES 0`` summed over every key under ``prefix``; and the keys."""
    total = keys = 0
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        used = await client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        total += int(used or 0)
        keys += 1
    return total, keys


async def postgres_bytes(conn: asyncpg.Connection, schema: str | None = None) -> int:
    """``pg_total_relation_size`` (heap, TOAST, indexes) summed over the tables of
    ``schema``, or of every schema but the system's."""
    return int(
        await conn.fetchval(
            """
            SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r'
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%'
              AND ($1::text IS NULL OR n.nspname = $1)
            """,
            schema,
        )
    )


def object_bytes(directory: Path) -> tuple[int, int]:
    """Bytes and files under ``directory`` (0, 0 when it does not exist)."""
    total = files = 0
    if directory.exists():
        for path in directory.rglob("*"):
            if path.is_file():
                total += path.stat().st_size
                files += 1
    return total, files


async def stored(handle: OpenSaver) -> dict[str, int]:
    """What ``handle``'s stores hold now, after its outbox drained."""
    await handle.settle()
    redis_total = redis_keys = 0
    if "redis" in handle.spec.stores and handle.servers is not None:
        client = aioredis.Redis.from_url(handle.servers.redis_url)
        try:
            redis_total, redis_keys = await redis_bytes(client, handle.prefix)
        finally:
            await client.aclose()
    assert handle.pg_dsn is not None
    conn = await asyncpg.connect(handle.pg_dsn)
    try:
        pg = await postgres_bytes(conn)
    finally:
        await conn.close()
    objects, files = object_bytes(objects_dir(handle))
    return {
        "redis_bytes": redis_total,
        "redis_keys": redis_keys,
        "postgres_bytes": pg,
        "object_bytes": objects,
        "object_files": files,
        "durable_bytes": pg + objects,
        "all_bytes": redis_total + pg + objects,
    }


# -- the run -----------------------------------------------------------------------------


def nearest_rank(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


@dataclass
class Measured:
    latencies_s: list[float] = field(default_factory=list)
    series: list[dict[str, int]] = field(default_factory=list)


async def _warm_up(handle: OpenSaver, workload: Workload) -> None:
    """One invoke on a thread of its own (connections, scripts), deleted after."""
    thread = new_thread("big-warm")
    await build_graph(handle.saver, workload).ainvoke({"step": 0}, thread_config(thread))
    await handle.saver.adelete_thread(thread)
    await handle.settle()


async def measure_savers(
    servers: Servers,
    size: Size,
    variants: Sequence[Variant] = VARIANTS,
    progress: Callable[[str], None] | None = None,
    workload: Workload | None = None,
) -> dict[str, Any]:
    """Run the workload through the official saver and each variant, taking turns step
    by step; return the settings, the stored bytes and the latencies, as one JSON doc.
    Latencies are compared with the first variant's (``baseline``)."""
    workload = workload or Workload(size)
    specs = [OFFICIAL, *(v.spec() for v in variants)]
    savers: dict[str, dict[str, Any]] = {}
    handles: dict[str, OpenSaver] = {}
    async with contextlib.AsyncExitStack() as stack:
        for spec in specs:
            variant = next((v for v in variants if v.name == spec.name), None)
            entry = {
                "label": spec.label,
                "settings": variant.settings() if variant else "AsyncPostgresSaver, defaults",
                "available": False,
                "error": None,
            }
            savers[spec.name] = entry
            try:
                handle = await stack.enter_async_context(open_saver(spec, servers))
                await _warm_up(handle, workload)
            except SaverUnavailable as exc:
                entry["error"] = str(exc)
                continue
            entry["available"] = True
            handles[spec.name] = handle
        graphs = {name: build_graph(h.saver, workload) for name, h in handles.items()}
        configs = {name: thread_config(new_thread(f"big-{name}")) for name in handles}
        measured = {name: Measured() for name in handles}
        order = list(handles)
        for step in range(size.steps):
            turn = step % len(order)
            for name in order[turn:] + order[:turn]:
                started = time.perf_counter()
                await graphs[name].ainvoke({"step": step}, configs[name])
                measured[name].latencies_s.append(time.perf_counter() - started)
            if (step + 1) % size.sample_every == 0 or step + 1 == size.steps:
                for name, handle in handles.items():
                    sample = await stored(handle)
                    measured[name].series.append({"messages": step + 1, **sample})
                if progress:
                    progress(f"big_state: {step + 1}/{size.steps} steps")
        for name, handle in handles.items():
            state = await graphs[name].aget_state(configs[name])
            assert len(state.values["messages"]) == size.steps, name
            savers[name].update(_summary(measured[name]))
            savers[name]["counters"] = await handle.counters()
    _ratios(savers, variants[0].name)
    return {"workload": workload.describe(), "baseline": variants[0].name, "savers": savers}


def _summary(m: Measured) -> dict[str, Any]:
    return {
        "steps": len(m.latencies_s),
        "p50_ms": round(nearest_rank(m.latencies_s, 50) * 1000, 3),
        "p95_ms": round(nearest_rank(m.latencies_s, 95) * 1000, 3),
        "p99_ms": round(nearest_rank(m.latencies_s, 99) * 1000, 3),
        "mean_ms": round(sum(m.latencies_s) / len(m.latencies_s) * 1000, 3),
        "stored": m.series[-1],
        "series": m.series,
    }


def _ratios(savers: dict[str, dict[str, Any]], baseline_name: str) -> None:
    """Each saver's bytes against the official saver's, its p50 against the baseline's."""
    official = savers.get(OFFICIAL.name, {})
    baseline = savers.get(baseline_name, {})
    for entry in savers.values():
        if not entry["available"]:
            continue
        ratios: dict[str, float | None] = {}
        if official.get("available"):
            base = official["stored"]["postgres_bytes"]
            ratios["durable_vs_official"] = round(entry["stored"]["durable_bytes"] / base, 4)
            ratios["all_vs_official"] = round(entry["stored"]["all_bytes"] / base, 4)
            ratios["p50_vs_official"] = round(entry["p50_ms"] / official["p50_ms"], 4)
        if baseline.get("available"):
            ratios["p50_vs_plain"] = round(entry["p50_ms"] / baseline["p50_ms"], 4)
            ratios["p95_vs_plain"] = round(entry["p95_ms"] / baseline["p95_ms"], 4)
        entry["ratios"] = ratios


def aims(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's two aims, for each variant with compression (and offload)."""
    savers = doc["savers"]
    found = []
    for name, entry in savers.items():
        if name in (OFFICIAL.name, doc["baseline"]):
            continue
        ratios = entry.get("ratios", {}) if entry["available"] else {}
        checks = (
            ("stored bytes (PostgreSQL + objects) vs official", "durable_vs_official", BYTES_AIM),
            (
                "stored bytes (Redis + PostgreSQL + objects) vs official",
                "all_vs_official",
                BYTES_AIM,
            ),
            ("p50 step latency vs DualSaver without them", "p50_vs_plain", LATENCY_AIM),
        )
        for what, key, target in checks:
            ratio = ratios.get(key)
            found.append(
                {
                    "saver": name,
                    "aim": what,
                    "target": target,
                    "ratio": ratio,
                    "met": None if ratio is None else ratio <= target,
                }
            )
    return found


# -- the report --------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def render_markdown(doc: dict[str, Any]) -> str:
    w = doc["workload"]
    lines = [
        "# Big state: what the stores hold, and what a step costs",
        "",
        f"`{doc['command']}` on {doc['machine']['cores']} cores "
        f"({doc['machine']['cpu']}), {doc['finished_at']}, commit "
        f"{doc['machine']['git_commit']}. {_servers_line(doc)} A chat thread grows to "
        f"{w['messages']} messages of about {w['message_bytes']:,} bytes (sentences from a "
        f"fixed made-up vocabulary, seeded), plus a tool output of about "
        f"{w['tool_bytes'] / 2**20:g} MiB (JSON search hits) every {w['tool_every']} steps "
        f"({w['tool_outputs']} in all) in a channel of its own; one step is one `ainvoke` "
        "appending one message. The savers took turns step by step against the same "
        "servers: only ratios within this run mean anything.",
        "",
        "Bytes (MB = 10^6 bytes), after the write_behind outbox drained: Redis is `MEMORY "
        "USAGE key SAMPLES 0` summed over the saver's keys; PostgreSQL is "
        "`pg_total_relation_size` (heap + TOAST + indexes) summed over every table of the "
        "saver's own database, measured the same way for the official saver's tables; "
        "objects are the files in the offload directory. *Durable* is PostgreSQL + objects "
        "(what is kept for good: DualSaver's Redis copy expires after its TTL, 24 h by "
        "default); *all* adds Redis.",
        "",
        f"## At {w['messages']} messages",
        "",
        "| saver | settings | Redis MB | PostgreSQL MB | objects MB (files) | durable MB "
        "| durable vs official | all MB | all vs official | p50 ms | p95 ms | p50 vs no "
        "compression |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, e in doc["savers"].items():
        if not e["available"]:
            lines.append(f"| {name} | **not measured**: {e['error']} |" + " - |" * 10)
            continue
        s, r = e["stored"], e.get("ratios", {})
        lines.append(
            f"| {name} | {e['settings']} | {_mb(s['redis_bytes'])} | {_mb(s['postgres_bytes'])} "
            f"| {_mb(s['object_bytes'])} ({s['object_files']}) | {_mb(s['durable_bytes'])} "
            f"| {_x(r.get('durable_vs_official'))} | {_mb(s['all_bytes'])} "
            f"| {_x(r.get('all_vs_official'))} | {e['p50_ms']:.2f} | {e['p95_ms']:.2f} "
            f"| {_x(r.get('p50_vs_plain'))} |"
        )
    lines += ["", "## Aims (issue 15)", ""]
    for aim in doc["aims"]:
        if aim["ratio"] is None:
            verdict = "not measured"
        else:
            margin = aim["ratio"] / aim["target"]
            verdict = (
                f"**met** ({_x(aim['ratio'])}, {(1 - margin) * 100:.0f}% under the aim)"
                if aim["met"]
                else f"**missed** ({_x(aim['ratio'])}, {(margin - 1) * 100:.0f}% over the aim)"
            )
        lines.append(f"- {aim['saver']}: {aim['aim']} <= {aim['target']}x: {verdict}")
    lines += [
        "",
        "## Reading",
        "",
        "- LangGraph stores a channel's whole value again in each checkpoint that changes it: "
        "the history is written at every step, a little longer each time, so every saver's "
        "bytes grow with the square of the thread's length (the table below). Each tool "
        "output is stored twice: as the node's pending write and as the channel's value.",
        "- PostgreSQL compresses values over about 2 KB itself (TOAST, pglz), the official "
        "saver's as well as DualSaver's; Redis keeps the bytes it is given.",
        "- Whole-value offload (`chunk_bytes=None`) moves a value whose bytes after "
        "compression are `min_bytes` or more, stored once per content hash: a tool output's "
        "two copies are one object. A value under `min_bytes` once compressed (the history "
        "here) stays in the tiers, a whole copy per step.",
        "- Chunked offload cuts a value of `min_bytes` or more (serialized, before "
        "compression) by content into chunks of about 20 KiB, each compressed and stored "
        "once: consecutive versions of the history share all but the first chunk (the "
        "list's length is there) and the last (the new message), so each step stores about "
        "two chunks and the tiers a list of them; the history grows linearly, not with the "
        "square of its length. The process keeps the chunks it wrote or read in memory "
        "(64 MiB), so a step reads back only what it has not seen.",
        "",
        "## Durable bytes as the thread grows (MB)",
        "",
        "![sizes](big_state.png)",
        "",
    ]
    available = [n for n, e in doc["savers"].items() if e["available"]]
    lines.append("| messages | " + " | ".join(available) + " |")
    lines.append("| ---: |" + " ---: |" * len(available))
    points = doc["savers"][available[0]]["series"] if available else []
    for i, point in enumerate(points):
        row = [_mb(doc["savers"][n]["series"][i]["durable_bytes"]) for n in available]
        lines.append(f"| {point['messages']} | " + " | ".join(row) + " |")
    counters = {n: e["counters"] for n, e in doc["savers"].items() if e.get("counters")}
    fallbacks = {n: {k: v for k, v in c.items() if v} for n, c in counters.items()}
    lines += [
        "",
        "Fallback counters (degraded reads/writes, dead letters) during the run: "
        + (
            "; ".join(f"{n}: {c}" for n, c in fallbacks.items() if c)
            if any(fallbacks.values())
            else "none."
        ),
        "",
    ]
    return "\n".join(lines)


def sizes_picture(doc: dict[str, Any]) -> Figure:
    """Left: durable bytes as the thread grows; right: every store at the end, stacked."""
    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    grow, end = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    measured = {n: e for n, e in doc["savers"].items() if e["available"]}
    for name, entry in measured.items():
        series = entry["series"]
        grow.plot(
            [p["messages"] for p in series],
            [p["durable_bytes"] / 1e6 for p in series],
            marker="o",
            label=name,
        )
    grow.set_xlabel("messages in the thread")
    grow.set_ylabel("MB kept (PostgreSQL + objects)")
    grow.set_title("durable bytes as the thread grows")
    grow.grid(alpha=0.3)
    grow.legend(fontsize=8)
    names = list(measured)
    bottom = [0.0] * len(names)
    for store, colour in (("postgres", "#4C72B0"), ("object", "#55A868"), ("redis", "#C44E52")):
        heights = [measured[n]["stored"][f"{store}_bytes"] / 1e6 for n in names]
        end.bar(names, heights, bottom=bottom, color=colour, label=store)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    end.set_ylabel("MB")
    end.set_title(f"every store at {doc['workload']['messages']} messages")
    end.tick_params(axis="x", labelrotation=20, labelsize=8)
    end.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _servers_line(doc: dict[str, Any]) -> str:
    servers = doc.get("servers", {})
    redis_info, pg = servers.get("redis", {}), servers.get("postgres", {})
    return (
        f"{redis_info.get('server', 'redis').capitalize()} {redis_info.get('version')} "
        f"(appendonly {redis_info.get('settings', {}).get('appendonly')}), PostgreSQL "
        f"{pg.get('server_version')} (fsync {pg.get('fsync')})."
    )


async def _run(size_name: str, servers: Servers) -> dict[str, Any]:
    machine = describe_machine()
    doc = {
        "size": size_name,
        "command": "python benchmarks/big_state.py" + ("" if size_name == "full" else " --quick"),
        "machine": machine,
        "servers": await describe_servers(servers),
    }
    doc.update(
        await measure_savers(
            servers, SIZES[size_name], progress=lambda line: print(line, flush=True)
        )
    )
    doc["aims"] = aims(doc)
    doc["finished_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_const", const="quick", dest="size")
    parser.add_argument(
        "--out", type=Path, help="directory (default benchmarks/results, or .../quick)"
    )
    args = parser.parse_args(argv)
    size = args.size or "full"
    out = args.out or (RESULTS if size == "full" else RESULTS / "quick")

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # the servers' context managers stop them

    signal.signal(signal.SIGTERM, terminate)
    started = time.perf_counter()
    with bench_servers() as servers:
        doc = asyncio.run(_run(size, servers))
    doc["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "big_state.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "big_state.md").write_text(render_markdown(doc))
    sizes_picture(doc).savefig(out / "big_state.png", dpi=100, metadata={"Software": None})
    print(render_markdown(doc))
    print(f"wrote {out / 'big_state.md'} and big_state.json in {doc['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
