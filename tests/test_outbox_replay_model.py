"""Crash and replay, against a model: random puts, pending writes, deletes and threads
used again after a delete, with flush workers that die holding entries (before or after
their COMMIT, never acknowledging) and entries applied again in any order, late. After
every full drain PostgreSQL holds exactly the acknowledged records of the threads not
deleted since, no more and no less.

A dying worker is a consumer of the outbox group that reads a batch, optionally applies
it, and stops without acknowledging: Redis sees exactly what it sees of a SIGKILLed
process (tests/test_dual_faults.py kills real ones); a surviving worker reclaims its
entries.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from langgraph_dualsaver.chain.flusher import Flusher, FlushSettings
from langgraph_dualsaver.chain.outbox import Entry
from langgraph_dualsaver.chain.saver import DualSaver
from tests.helpers import checkpoint, config

THREADS = ["a", "b"]
RECLAIM_AT_ONCE = FlushSettings(claim_idle=timedelta(0), max_deliveries=1000)


class DyingFlusher(Flusher):
    """Applies what it read, then dies before acknowledging anything."""

    async def _ack(self, entries: Any) -> None:
        return None


@dataclass
class ModelThread:
    checkpoints: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    writes: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)


class CrashReplayMachine(RuleBasedStateMachine):
    saver: DualSaver

    def __init__(self) -> None:
        super().__init__()
        self.run = uuid.uuid4().hex[:8]
        self.model: dict[str, ModelThread] = {}
        self.version = 0
        self.seen: list[Entry] = []  # every entry a worker read: candidates for replay

    def thread_id(self, name: str) -> str:
        return f"replay-{self.run}-{name}"

    def sync(self, coro: Any) -> Any:
        return self.saver._sync(coro)

    @rule(name=st.sampled_from(THREADS), value=st.text(max_size=8))
    def put(self, name: str, value: str) -> None:
        thread = self.model.setdefault(name, ModelThread())
        parent = thread.checkpoints[-1] if thread.checkpoints else None
        self.version += 1
        ckpt = checkpoint(value, self.version)
        meta = {"source": "loop", "step": len(thread.checkpoints)}
        self.saver.put(config(self.thread_id(name), parent), ckpt, meta, {"x": self.version})
        thread.checkpoints.append(ckpt["id"])
        thread.values[ckpt["id"]] = value

    @precondition(lambda self: any(t.checkpoints for t in self.model.values()))
    @rule(data=st.data(), value=st.integers(0, 1000))
    def put_writes(self, data: st.DataObject, value: int) -> None:
        name = data.draw(st.sampled_from([n for n, t in self.model.items() if t.checkpoints]))
        thread = self.model[name]
        latest = thread.checkpoints[-1]
        task = data.draw(st.sampled_from(["task-1", "task-2"]))
        cfg = config(self.thread_id(name), latest)
        self.saver.put_writes(cfg, [("w", value)], task, f"~{task}")
        existing = thread.writes.setdefault(latest, [])
        if not any(t == task for t, _, _ in existing):  # (task, idx 0): first write wins
            existing.append((task, "w", value))

    @rule(name=st.sampled_from(THREADS))
    def delete(self, name: str) -> None:
        self.saver.delete_thread(self.thread_id(name))
        self.model.pop(name, None)

    @rule(name=st.sampled_from(THREADS))
    def delete_then_the_application_dies(self, name: str) -> None:
        """Redis deleted the thread and queued the tombstone; PostgreSQL hears of it
        only from the flush workers."""
        key = self.sync(self.saver._key())
        self.sync(self.saver.hot.adelete_thread(self.thread_id(name), key=key))
        self.model.pop(name, None)

    @rule(batch=st.integers(1, 6), commit=st.booleans())
    def a_worker_dies(self, batch: int, commit: bool) -> None:
        async def die() -> None:
            key = await self.saver._key()
            dying = DyingFlusher(self.saver.hot, self.saver.durable,
                                 FlushSettings(batch=batch), f"dying-{uuid.uuid4().hex[:6]}",
                                 key=key)  # fmt: skip
            outbox = dying.outbox
            entries = await outbox.read(batch, own_pending=False)
            self.seen += entries
            if commit:
                await dying._apply(entries)

        self.sync(die())

    @rule(seed=st.integers(0, 2**16))
    def entries_are_applied_again_late(self, seed: int) -> None:
        """What a reclaim or a leftover pass does: apply every entry a worker ever read
        once more, in any order, whatever was written since."""
        chosen = list(self.seen)
        random.Random(seed).shuffle(chosen)  # drawn from a seed: the entries vary by run

        async def replay() -> None:
            for entry in chosen:
                if entry.deleted_thread is not None:
                    await self.saver.durable.adelete_thread(
                        entry.deleted_thread, tombstone_seq=entry.seq
                    )
                elif entry.record is not None:
                    await self.saver.durable.awrite_guarded([entry.record], [entry.seq])

        self.sync(replay())
        self.a_survivor_drains_everything()

    @rule()
    def a_survivor_drains_everything(self) -> None:
        async def drain() -> None:
            survivor = Flusher(self.saver.hot, self.saver.durable, RECLAIM_AT_ONCE,
                               key=await self.saver._key())  # fmt: skip
            await survivor.drain()

        self.sync(drain())
        assert self.saver.lag() == 0
        assert self.saver.stats().dead_letters == 0
        for name in THREADS:
            self.check_durable(name)

    def check_durable(self, name: str) -> None:
        thread = self.model.get(name, ModelThread())
        cfg = config(self.thread_id(name))
        listed = [t.checkpoint["id"] for t in self.saver.durable.list(cfg)]
        assert listed == list(reversed(thread.checkpoints))
        for tuple_ in self.saver.durable.list(cfg):
            cid = tuple_.checkpoint["id"]
            assert tuple_.checkpoint["channel_values"] == {"x": thread.values[cid]}
            assert sorted(tuple_.pending_writes or []) == sorted(thread.writes.get(cid, []))


@pytest.mark.timeout(300)
def test_postgres_ends_holding_exactly_what_was_acknowledged_and_not_deleted(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False
    ) as saver:
        saver.setup()
        CrashReplayMachine.saver = saver
        run_state_machine_as_test(
            CrashReplayMachine,
            settings=settings(
                max_examples=40,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
