"""A hypothesis state machine drives DualSaver with random sequences of put, put_writes,
get, list, delete, flush and expire, and checks both tiers against an in-memory model
after every step (PostgreSQL once a flush has happened)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from langgraph_dualsaver.chain.saver import DualSaver
from tests.helpers import checkpoint, config

THREADS = ["a", "b", "c"]


@dataclass
class ModelThread:
    checkpoints: list[str] = field(default_factory=list)  # ids, oldest first
    values: dict[str, str] = field(default_factory=dict)  # id -> value of channel x
    writes: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)


class DualSaverMachine(RuleBasedStateMachine):
    saver: DualSaver  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.run = uuid.uuid4().hex[:8]
        self.model: dict[str, ModelThread] = {}
        self.version = 0

    def thread_id(self, name: str) -> str:
        return f"model-{self.run}-{name}"

    @rule(name=st.sampled_from(THREADS), value=st.text(max_size=20))
    def put(self, name: str, value: str) -> None:
        thread = self.model.setdefault(name, ModelThread())
        parent = thread.checkpoints[-1] if thread.checkpoints else None
        self.version += 1
        ckpt = checkpoint(value, self.version)
        saved = self.saver.put(
            config(self.thread_id(name), parent),
            ckpt,
            {"source": "loop", "step": len(thread.checkpoints)},
            {"x": self.version},
        )
        assert saved["configurable"]["checkpoint_id"] == ckpt["id"]
        thread.checkpoints.append(ckpt["id"])
        thread.values[ckpt["id"]] = value

    @precondition(lambda self: any(t.checkpoints for t in self.model.values()))
    @rule(
        data=st.data(),
        channel=st.sampled_from(["w1", "w2"]),
        value=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    )
    def put_writes(self, data: st.DataObject, channel: str, value: int) -> None:
        name = data.draw(st.sampled_from([n for n, t in self.model.items() if t.checkpoints]))
        thread = self.model[name]
        latest = thread.checkpoints[-1]
        task = data.draw(st.sampled_from(["task-1", "task-2"]))
        self.saver.put_writes(
            config(self.thread_id(name), latest), [(channel, value)], task, f"~{task}"
        )
        existing = thread.writes.setdefault(latest, [])
        if not any(t == task for t, _, _ in existing):  # (task, idx 0): first write wins
            existing.append((task, channel, value))

    @rule(name=st.sampled_from(THREADS))
    def delete(self, name: str) -> None:
        self.saver.delete_thread(self.thread_id(name))
        self.model.pop(name, None)

    @rule()
    def flush(self) -> None:
        self.saver.flush()
        for name in THREADS:
            self.check_tier(name, durable_only=True)

    @rule(name=st.sampled_from(THREADS))
    def expire(self, name: str) -> None:
        """TTL expiry: only what is durable may leave Redis, so flush first."""
        self.saver.flush()
        self.saver._sync(self.saver.hot.aevict_thread(self.thread_id(name)))

    @invariant()
    def both_tiers_agree_with_the_model(self) -> None:
        for name in THREADS:
            self.check_tier(name, durable_only=False)

    def check_tier(self, name: str, *, durable_only: bool) -> None:
        reader = self.saver.durable if durable_only else self.saver
        thread = self.model.get(name, ModelThread())
        cfg = config(self.thread_id(name))
        listed = [t.checkpoint["id"] for t in reader.list(cfg)]
        assert listed == list(reversed(thread.checkpoints))
        latest = reader.get_tuple(cfg)
        if not thread.checkpoints:
            assert latest is None
            return
        latest_id = thread.checkpoints[-1]
        assert latest.checkpoint["id"] == latest_id
        assert latest.checkpoint["channel_values"] == {"x": thread.values[latest_id]}
        expected = sorted(thread.writes.get(latest_id, []))
        assert sorted(latest.pending_writes or []) == expected


def test_dual_saver_agrees_with_a_model(redis_url: str, pg_dsn: str, redis_prefix: str) -> None:
    with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, mode="write_behind", background_flush=False
    ) as saver:
        saver.setup()
        DualSaverMachine.saver = saver
        run_state_machine_as_test(
            DualSaverMachine,
            settings=settings(
                max_examples=10,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


pytestmark = pytest.mark.timeout(240)
