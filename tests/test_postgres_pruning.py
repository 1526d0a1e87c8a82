"""With ``partitions=N``, every statement the PostgreSQL tier runs for a thread reads
one partition per table.

The saver runs an exercise of every method that touches a thread (and every
``list_sql`` form with a thread) on connections where ``auto_explain`` logs the plan
each statement executed, with actual loops (``log_analyze``), the statements inside
``dualsaver_write_batch`` included (``log_nested_statements``). It runs twice: with
PostgreSQL's custom plans, and with generic plans (``plan_cache_mode =
force_generic_plan``), which a prepared statement may get from its sixth run on, and
which can prune only at executor start-up. A statement fails if scans ran on more
than one partition of one table. Inserts route each row to its thread's partition and
scan nothing, so they pass by construction.

Nothing is forgotten: every SQL constant of ``durable.sql`` is either seen in the log
or listed in ``NOT_THREAD_QUERIES`` with the reason; a new statement fails
``test_every_statement_is_accounted_for`` until it is one or the other. And the
detector is shown to detect: ``THREADS`` (every thread's latest) must be seen scanning
several partitions.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import asyncpg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from langgraph_dualsaver import Retention
from langgraph_dualsaver.durable import sql as sql
from langgraph_dualsaver.durable.retention import Sweeper
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.records import checkpoint_record, writes_record
from langgraph_dualsaver.runs import Claim
from tests.helpers import config
from tests.servers import fresh_database

# The pool's connections carry the notice listener while they are lent out.
pytestmark = pytest.mark.filterwarnings("ignore:.*active log listener")

PARTITIONS = 8
THREAD = "pruned-thread"
COPY = "copy-target"
RETAINED = "retained"
OTHERS = [f"other-{n}" for n in range(8)]

NOT_THREAD_QUERIES: dict[str, str] = {
    "ADVISORY_LOCK_SETUP": "setup's lock: no table",
    "ADVISORY_UNLOCK_SETUP": "setup's lock: no table",
    "CURRENT_MIGRATION": "setup: dualsaver_migrations, not a thread table",
    "RECORD_MIGRATION": "setup: dualsaver_migrations, not a thread table",
    "CLAIM_SETTING": "dualsaver_settings, not a thread table",
    "GET_SETTING": "dualsaver_settings, not a thread table",
    "PUT_SETTING": "dualsaver_settings, not a thread table",
    "SCHEMA_EXISTS": "catalog",
    "SEARCH_PATH": "session setting",
    "TABLE_LAYOUT": "setup: catalog",
    "THREADS": "every thread's latest checkpoint: reads every partition by design",
    "RUN_THREADS": "finds the threads of runs (delete_for_runs), by run id across threads",
    "RETENTION_THREADS": "retention's sweep: the next threads in id order, across threads",
    "RETENTION_LOCK": "retention's one-sweeper lock: no table",
    "RETENTION_UNLOCK": "retention's one-sweeper lock: no table",
}
"""Statements that are not one thread's, with why; every other one must be seen."""

WRITE_BATCH = "dualsaver_write_batch"
"""The name given to the statements ``dualsaver_write_batch`` runs."""
CLAIM = "dualsaver_claim"
"""The name given to the statements ``dualsaver_claim`` runs (exclusive runs)."""


def _norm(text: str) -> str:
    return " ".join(text.split())


def sql_constants() -> dict[str, str]:
    """Every SQL statement constant ``durable.sql`` exports, by name."""
    return {name: value for name in sql.__all__ if isinstance(value := getattr(sql, name), str)}


def list_forms() -> dict[str, tuple[dict[str, bool], str]]:
    """Every ``list_sql`` form for one thread (the forms without one read all threads)."""
    forms = {}
    names = ("namespace", "checkpoint", "filter", "before", "after", "limit")
    for values in product((False, True), repeat=len(names)):
        flags = dict(zip(names, values, strict=True))
        forms[f"list_sql({', '.join(n for n, v in flags.items() if v) or 'thread'})"] = (
            flags,
            sql.list_sql(thread=True, **flags),
        )
    return forms


def function_body(function: str = WRITE_BATCH) -> str:
    """The normalized text of the newest ``function`` (``dualsaver_write_batch``), as
    plpgsql runs its statements: a ``SELECT ... INTO var`` without its ``INTO var``."""
    body = _norm(next(m for m in reversed(sql.MIGRATIONS) if f"FUNCTION {function}(" in m))
    return re.sub(r"(?<!INSERT) INTO [a-z_]+(?:, [a-z_]+)*", "", body)


@dataclass
class Observed:
    """Per statement name: the partitions its scans ran on, per partitioned table."""

    parents: dict[str, str]
    touched: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    violations: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def record(self, name: str | None, plan: dict[str, Any], text: str) -> None:
        touched: dict[str, set[str]] = defaultdict(set)
        _scans(plan, self.parents, touched)
        if name is None:
            if touched:
                self.unknown.append(text)
            return
        seen = self.touched.setdefault(name, {})
        for table, partitions in touched.items():
            seen.setdefault(table, set()).update(partitions)  # over runs: several threads
            if len(partitions) > 1:  # in one run
                self.violations.setdefault(name, []).append(f"{table}: {sorted(partitions)}")


def _scans(node: dict[str, Any], parents: dict[str, str], out: dict[str, set[str]]) -> None:
    relation = node.get("Relation Name")
    if relation in parents and node.get("Actual Loops", 0) > 0:
        out[parents[relation]].add(relation)
    for child in node.get("Plans", ()):
        _scans(child, parents, out)


class Explained:
    """Parses ``auto_explain`` notices into ``Observed``, naming each statement."""

    def __init__(self, observed: Observed) -> None:
        self.observed = observed
        self.names = {_norm(text): name for name, text in sql_constants().items()}
        self.names.update({_norm(text): name for name, (_, text) in list_forms().items()})
        self.body = function_body()
        self.claim_body = function_body(CLAIM)

    def notice(self, _conn: Any, message: asyncpg.PostgresLogMessage) -> None:
        text = message.message
        if "plan:" not in text:
            return
        explained = json.loads(text.split("plan:", 1)[1])
        query = _norm(explained["Query Text"])
        name = self.names.get(query)
        if name is None and query in self.body:
            name = WRITE_BATCH
        elif name is None and query in self.claim_body:
            name = CLAIM
        self.observed.record(name, explained["Plan"], query)


@asynccontextmanager
async def explaining_pool(dsn: str, explained: Explained, generic: bool) -> AsyncIterator[Any]:
    settings = {
        "auto_explain.log_min_duration": "0",
        "auto_explain.log_analyze": "on",
        "auto_explain.log_timing": "off",
        "auto_explain.log_nested_statements": "on",
        "auto_explain.log_format": "json",
        "auto_explain.log_level": "notice",
        "plan_cache_mode": "force_generic_plan" if generic else "auto",
    }

    async def init(conn: asyncpg.Connection) -> None:
        await conn.execute("LOAD 'auto_explain'")
        for name, value in settings.items():
            await conn.execute("SELECT set_config($1, $2, false)", name, value)

    async def setup(conn: asyncpg.Connection) -> None:
        conn.add_log_listener(explained.notice)  # a release clears the listeners

    async def keep(_conn: asyncpg.Connection) -> None:
        """No RESET ALL on release: the settings stay."""

    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=1, init=init, setup=setup, reset=keep
    )
    try:
        yield pool
    finally:
        await pool.close()


def _checkpoint(step: int) -> Any:
    ckpt = empty_checkpoint()
    ckpt["id"] = str(uuid6(clock_seq=-1))
    ckpt["channel_values"] = {"x": f"v{step}", "y": step}
    ckpt["channel_versions"] = {"x": step, "y": step}
    return ckpt


async def exercise(saver: PostgresDurableSaver, pool: asyncpg.Pool) -> None:
    """Every method that runs a statement for a thread, with data for each to find."""
    parent = config(THREAD)
    heads = []
    for step in range(1, 4):
        metadata: dict[str, Any] = {"step": step, "run_id": f"run-{step}"}
        parent = await saver.aput(parent, _checkpoint(step), metadata, {"x": step, "y": step})
        await saver.aput_writes(parent, [("x", f"w{step}")], f"task-{step}", "~__pregel_pull, a")
        await saver.aput_writes(parent, [("__error__", "boom")], f"task-{step}")
        heads.append(parent)
    await saver.aput(config(THREAD, ns="child:1"), _checkpoint(1), {"step": 1}, {"x": 1, "y": 1})

    # The chain's guarded batch: a checkpoint with blobs, a special and a plain write.
    cfg = await saver.aput(heads[-1], _checkpoint(4), {"step": 4}, {"x": 4})
    records = [
        checkpoint_record(
            saver.serde,
            saver.limits,
            cfg,
            _checkpoint(5),
            {"step": 5, "counters_since_delta_snapshot": {"x": 2}},
            {"x": 5, "y": 5},
        ),
        writes_record(saver.serde, saver.limits, cfg, [("x", "late")], "task-5"),
        writes_record(saver.serde, saver.limits, cfg, [("__error__", "late")], "task-6"),
    ]
    assert await saver.awrite_guarded(records, [10, 11, 12]) == []
    # Exclusive runs: a run's claimed write (dualsaver_claim, then the batch), its lease.
    head = records[0].checkpoint_id
    claim = Claim(THREAD, "run-x", "take", 60_000, check_head=True, head=head)
    claimed = [writes_record(saver.serde, saver.limits, cfg, [("x", "mine")], "task-7")]
    assert await saver.awrite_guarded(claimed, [13], claim=claim) == []
    assert await saver.alease(THREAD) is not None

    await saver.aget_tuple(config(THREAD))
    await saver.aget_tuple(heads[0])
    await saver.aload_records(config(THREAD))
    assert [c async for c in saver.alist(config(THREAD), limit=2)]
    await saver.aget_delta_channel_history(config=config(THREAD), channels=["x"])
    await saver.aget_delta_channel_history(config=heads[1], channels=["x"])
    assert await saver.aaudit(THREAD)
    await saver.athread_info(THREAD)
    assert len(await saver.athreads()) >= len(OTHERS)

    # Every list_sql form, as the saver pages through them.
    last = heads[-1]["configurable"]["checkpoint_id"]
    values = {
        "namespace": "",
        "checkpoint": last,
        "filter": json.dumps({"step": 3}),
        "before": "~",
        "after": [last, THREAD, ""],
        "limit": 5,
    }
    async with pool.acquire() as conn:
        for flags, text in list_forms().values():
            args: list[Any] = [THREAD]
            for name, present in flags.items():
                if present:
                    value = values[name]
                    args.extend(value if isinstance(value, list) else [value])
            await conn.fetch(text, *args)

    await saver.acopy_thread(THREAD, COPY)
    await saver.adelete_for_runs(["run-1"])
    await saver.aprune([THREAD], strategy="keep_latest")
    await saver.aprune([COPY], strategy="delete")
    await saver.adelete_thread(THREAD, tombstone_seq=100)
    await saver.aput(config(COPY), _checkpoint(9), {"step": 9}, {"x": 9})
    await saver.adelete_thread(COPY)

    # Retention: a sweep, and a worker's batch, over every thread, one thread at a time.
    parent = config(RETAINED)
    for step in range(1, 4):
        metadata = {"step": step, "counters_since_delta_snapshot": {"x": step}}
        parent = await saver.aput(parent, _checkpoint(step), metadata, {"x": step, "y": step})
    assert (await saver.aretain(Retention(keep_last=1))).removed_checkpoints > 0
    assert await Sweeper(saver, Retention(keep_last=1)).step() is not None


@dataclass
class Run:
    observed: Observed
    generic: bool


async def _partition_parents(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname AS part, p.relname AS parent FROM pg_inherits AS i "
            "JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_class AS p ON p.oid = i.inhparent "
            "WHERE c.relkind = 'r'"
        )
    finally:
        await conn.close()
    return {r["part"]: r["parent"] for r in rows}


@pytest.fixture(scope="module", params=["custom", "generic"])
def run(request: pytest.FixtureRequest, postgres_url: str) -> Iterator[Run]:
    """The exercise, once per plan mode, on a database of its own."""
    with fresh_database(postgres_url) as pg_dsn:
        yield asyncio.run(_exercised(pg_dsn, generic=request.param == "generic"))


async def _exercised(pg_dsn: str, *, generic: bool) -> Run:
    """Set up with partitions, then the exercise on explaining connections."""
    async with PostgresDurableSaver.from_conn_string(pg_dsn, partitions=PARTITIONS) as saver:
        await saver.asetup()
        for other in OTHERS:  # threads in other partitions, for THREADS to read
            await saver.aput(config(other), _checkpoint(1), {"step": 1}, {"x": 1})
    parents = await _partition_parents(pg_dsn)
    assert len(parents) == PARTITIONS * len(sql.THREAD_TABLES)
    observed = Observed(parents)
    async with explaining_pool(pg_dsn, Explained(observed), generic) as pool:
        saver = PostgresDurableSaver.from_pool(pool)
        await exercise(saver, pool)
    return Run(observed, generic)


def test_every_thread_statement_reads_one_partition(run: Run) -> None:
    observed = run.observed
    violations = {
        name: found for name, found in observed.violations.items() if name not in NOT_THREAD_QUERIES
    }
    assert not violations, f"statements scanning several partitions: {violations}"
    assert not observed.unknown, f"unnamed statements read thread tables: {observed.unknown}"


def test_every_statement_is_accounted_for(run: Run) -> None:
    observed = set(run.observed.touched)
    expected = (set(sql_constants()) - set(NOT_THREAD_QUERIES)) | set(list_forms())
    missing = sorted(expected - observed)
    assert not missing, (
        f"statements the exercise never ran (run them or explain why not): {missing}"
    )
    assert set(NOT_THREAD_QUERIES) <= set(sql_constants()), "NOT_THREAD_QUERIES names a gone one"
    assert WRITE_BATCH in observed


def test_reads_found_their_rows_in_one_partition(run: Run) -> None:
    """The pruned reads did read: one partition of each table they join."""
    touched = run.observed.touched
    for name in ("GET_LATEST", "GET_BY_ID", "AUDIT", "DELTA_HISTORY_BY_ID"):
        assert len(touched[name]["dualsaver_checkpoints"]) == 1, name
    assert len(touched["GET_LATEST"]["dualsaver_blobs"]) == 1
    assert len(touched["AUDIT"]["dualsaver_writes"]) == 1


def test_the_detector_sees_a_query_that_reads_every_partition(run: Run) -> None:
    """``THREADS`` reads all threads: the same walk must report several partitions."""
    assert len(run.observed.touched["THREADS"]["dualsaver_checkpoints"]) > 1
