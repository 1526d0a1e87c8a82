"""State schemas that evolve: a case paused under version 1 resumes under version 2.

Every saver kind (each tier alone, both chain modes) stamps the version on ``put`` and
upgrades older checkpoints on every read path, sync and async, without changing what is
stored; a newer stamp or a gap in the upgrades is refused. Across processes: one
deployment at version 1 pauses the case, another at version 2 finishes it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, empty_checkpoint
from langgraph.types import Command, Interrupt
from typer.testing import CliRunner

from langgraph_dualsaver.app import (
    LARGE_DUPLICATE_CUSTOMER,
    STATE_SCHEMA,
    build_graph,
    new_case,
    new_thread_id,
    thread_config,
)
from langgraph_dualsaver.cli.app import app as cli_app
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.errors import (
    ConfigurationError,
    MissingUpgradeError,
    SchemaTooNewError,
    UpgradeFailedError,
)
from langgraph_dualsaver.state_upgrades import (
    SCHEMA_VERSION_KEY,
    UPGRADED_FROM_KEY,
    StateSchema,
    upgrade_tuple,
)
from tests.factories import SAVER_KINDS, open_saver
from tests.schema_helpers import DECISION, V1, v1_services

SCRIPT = Path(__file__).parent / "scripts" / "schema_case.py"
DUAL_MODES = ["write_behind", "write_through"]
APPROVED = "A refund of $650.00 is approved"


@pytest.fixture(params=SAVER_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def opener(kind: str, redis_url: str, pg_dsn: str, redis_prefix: str) -> Any:
    """``opener(schema)``: a saver of this test's kind on its own database and prefix."""

    @asynccontextmanager
    async def open_(schema: StateSchema | None) -> AsyncIterator[BaseCheckpointSaver]:
        async with open_saver(
            kind, redis_url=redis_url, pg_dsn=pg_dsn, prefix=redis_prefix, state_schema=schema
        ) as saver:
            yield saver

    return open_


async def pause_under_v1(opener: Any) -> tuple[RunnableConfig, CheckpointTuple]:
    """The $650 duplicate case, run by the first release until the human review."""
    config = thread_config(new_thread_id())
    async with opener(V1) as saver:
        await build_graph(saver, services=v1_services()).ainvoke(
            new_case(LARGE_DUPLICATE_CUSTOMER), config
        )
        paused = await saver.aget_tuple(config)
    assert paused is not None
    return config, paused


def billing(found: CheckpointTuple) -> dict[str, Any]:
    return found.checkpoint["channel_values"]["billing"]


# -- the pure part ---------------------------------------------------------------------


@pytest.mark.pure
def test_a_schema_refuses_upgrades_that_cannot_form_a_chain() -> None:
    with pytest.raises(ConfigurationError, match="upgrades key 2 must be an int from 1 to 1"):
        StateSchema(version=2, upgrades={2: dict})
    with pytest.raises(ConfigurationError, match="version must be an int >= 1"):
        StateSchema(version=0)
    with pytest.raises(ConfigurationError, match=r"upgrades\[1\] is not callable"):
        StateSchema(version=2, upgrades={1: "add_currency"})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="state_schema must be a StateSchema, got int"):
        PostgresDurableSaver(dsn="postgresql://nowhere/db", state_schema=2)  # type: ignore[arg-type]


@pytest.mark.pure
def test_an_upgrade_that_raises_or_touches_langgraph_channels_is_named() -> None:
    def broken(values: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("amount")

    found = CheckpointTuple(
        config=thread_config("t", checkpoint_id="c"),
        checkpoint={**empty_checkpoint(), "channel_values": {"billing": {}}},
        metadata={"step": 1},  # type: ignore[typeddict-item]
    )
    with pytest.raises(
        UpgradeFailedError, match="from state schema version 1 to 2 raised KeyError"
    ):
        upgrade_tuple(found, StateSchema(version=2, upgrades={1: broken}))
    with pytest.raises(UpgradeFailedError, match="upgrades may set state keys only"):
        upgrade_tuple(
            found, StateSchema(version=2, upgrades={1: lambda v: {**v, "branch:to:x": None}})
        )


# -- every saver kind, real servers --------------------------------------------------------


async def test_a_case_paused_under_v1_resumes_under_v2_and_the_stored_bytes_stay(
    opener: Any,
) -> None:
    config, paused = await pause_under_v1(opener)
    assert paused.metadata[SCHEMA_VERSION_KEY] == 1
    assert "currency" not in billing(paused)

    async with opener(STATE_SCHEMA) as saver:
        result = await build_graph(saver).ainvoke(Command(resume=DECISION), config)
        latest = await saver.aget_tuple(config)
    assert APPROVED in result["final_response"]
    assert result["billing"]["currency"] == "USD"
    assert latest is not None and latest.metadata[SCHEMA_VERSION_KEY] == 2
    assert UPGRADED_FROM_KEY not in latest.metadata  # written by version 2, not upgraded

    async with opener(None) as raw:  # what is stored, read without upgrades
        stored_paused = await raw.aget_tuple(paused.config)
        stored_latest = await raw.aget_tuple(config)
    assert stored_paused is not None and stored_latest is not None
    assert stored_paused.checkpoint == paused.checkpoint  # never rewritten
    assert stored_paused.metadata == paused.metadata
    # The resumed run's checkpoints hold the upgraded billing section themselves.
    assert billing(stored_latest)["currency"] == "USD"
    assert stored_latest.metadata[SCHEMA_VERSION_KEY] == 2


async def test_time_travel_shows_every_older_checkpoint_upgraded(opener: Any) -> None:
    config, paused = await pause_under_v1(opener)
    async with opener(STATE_SCHEMA) as saver:
        history = [item async for item in saver.alist(config)]
        at_pause = await saver.aget_tuple(paused.config)
        sync_history = await asyncio.to_thread(lambda: list(saver.list(config)))
        sync_at_pause = await asyncio.to_thread(saver.get_tuple, paused.config)

    assert len(history) == len(sync_history) >= 4
    for listing in (history, sync_history):
        assert {item.metadata[SCHEMA_VERSION_KEY] for item in listing} == {2}
        assert {item.metadata[UPGRADED_FROM_KEY] for item in listing} == {1}
        with_billing = [item for item in listing if "billing" in item.checkpoint["channel_values"]]
        assert with_billing and all(billing(item)["currency"] == "USD" for item in with_billing)
    for found in (at_pause, sync_at_pause):
        assert found is not None and billing(found)["currency"] == "USD"
        # the question asked at the review is passed through as it was asked
        interrupts = [w for w in found.pending_writes or [] if w[1] == "__interrupt__"]
        assert [type(i) for i in interrupts[0][2]] == [Interrupt]
        assert interrupts[0][2][0].value["refund_amount"] == 650.0


@pytest.mark.parametrize("mode", DUAL_MODES)
async def test_a_chain_read_that_falls_to_postgresql_is_upgraded_and_put_back_as_stored(
    mode: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    @asynccontextmanager
    async def opener(schema: StateSchema | None) -> AsyncIterator[Any]:
        async with open_saver(
            f"dual_{mode}", redis_url=redis_url, pg_dsn=pg_dsn, prefix=redis_prefix,
            state_schema=schema,
        ) as saver:  # fmt: skip
            yield saver

    config, paused = await pause_under_v1(opener)
    thread_id = config["configurable"]["thread_id"]
    async with opener(STATE_SCHEMA) as saver:
        await saver.aflush()
        await saver.hot.aevict_thread(thread_id)
        assert await saver.hot.aget_tuple(config) is None
        cold = await saver.aget_tuple(config)  # from PostgreSQL, then put back into Redis
        assert (await saver.astats()).hot_misses == 1
        hot = await saver.hot.aget_tuple(config)  # the tier itself: no state_schema
    assert cold is not None and billing(cold)["currency"] == "USD"
    assert cold.metadata[UPGRADED_FROM_KEY] == 1
    assert hot is not None and hot.checkpoint == paused.checkpoint  # put back as stored


async def test_upgrades_apply_in_order_to_values_and_pending_writes(opener: Any) -> None:
    calls: list[tuple[int, tuple[str, ...]]] = []

    def add_currency(values: dict[str, Any]) -> dict[str, Any]:
        calls.append((1, tuple(sorted(values))))
        if "billing" in values:
            values["billing"] = {**values["billing"], "currency": "USD"}
        return values

    def add_symbol(values: dict[str, Any]) -> dict[str, Any]:
        calls.append((2, tuple(sorted(values))))
        if "billing" in values:  # needs upgrades[1] to have run first
            values["billing"] = {
                **values["billing"],
                "symbol": {"USD": "$"}[values["billing"]["currency"]],
            }
        return values

    v3 = StateSchema(version=3, upgrades={2: add_symbol, 1: add_currency})
    config = thread_config(new_thread_id(), checkpoint_ns="")
    first = "00000000000000000000000000000001.1"
    checkpoint = {
        **empty_checkpoint(),
        "channel_values": {"billing": {"amount": 650.0}, "branch:to:policy_agent": None},
        "channel_versions": {"billing": first, "branch:to:policy_agent": first},
    }
    async with opener(V1) as saver:
        versions = checkpoint["channel_versions"]
        saved = await saver.aput(config, checkpoint, {"step": 2}, versions)  # type: ignore[arg-type]
        await saver.aput_writes(
            saved, [("billing", {"amount": 10.0}), ("__interrupt__", ["ask"])], "task-1"
        )
    async with opener(v3) as saver:
        found = await asyncio.to_thread(saver.get_tuple, saved)
    assert found is not None
    assert billing(found) == {"amount": 650.0, "currency": "USD", "symbol": "$"}
    assert found.checkpoint["channel_values"]["branch:to:policy_agent"] is None
    assert found.checkpoint["channel_versions"]["branch:to:policy_agent"] == first
    assert found.checkpoint["channel_versions"]["billing"] > first
    assert sorted(found.pending_writes or [], key=repr) == sorted(
        [
            ("task-1", "billing", {"amount": 10.0, "currency": "USD", "symbol": "$"}),
            ("task-1", "__interrupt__", ["ask"]),
        ],
        key=repr,
    )
    # values first, then the one pending write to a state channel; LangGraph's
    # channels are never shown to an upgrade
    assert calls == [(1, ("billing",)), (2, ("billing",)), (1, ("billing",)), (2, ("billing",))]


async def test_a_newer_checkpoint_or_a_gap_is_refused(opener: Any) -> None:
    v3 = StateSchema(version=3, upgrades={1: lambda v: v, 2: lambda v: v})
    newer = thread_config(new_thread_id())
    async with opener(v3) as saver:
        await saver.aput(newer, empty_checkpoint(), {"step": -1}, {})  # type: ignore[arg-type]
    config, _ = await pause_under_v1(opener)
    gap = StateSchema(version=3, upgrades={2: lambda v: v})

    async with opener(STATE_SCHEMA) as saver:
        with pytest.raises(SchemaTooNewError, match="version 3, newer than this code's 2"):
            await saver.aget_tuple(newer)
        with pytest.raises(SchemaTooNewError, match="no downgrade"):
            [item async for item in saver.alist(newer)]
        with pytest.raises(SchemaTooNewError):
            await asyncio.to_thread(saver.get_tuple, newer)
    async with opener(gap) as saver:
        with pytest.raises(MissingUpgradeError, match="upgrades has no entry for 1"):
            await saver.aget_tuple(config)
        with pytest.raises(MissingUpgradeError):
            await build_graph(saver).ainvoke(Command(resume=DECISION), config)
    async with opener(None) as raw:  # the refused reads wrote nothing
        assert len([item async for item in raw.alist(config)]) == 4


async def test_without_the_upgrade_version_2_fails_on_a_version_1_case(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    """Why the feature exists: the new code gets the old shape and fails."""

    @asynccontextmanager
    async def opener(schema: StateSchema | None) -> AsyncIterator[BaseCheckpointSaver]:
        async with open_saver(
            "dual_write_behind",
            redis_url=redis_url,
            pg_dsn=pg_dsn,
            prefix=redis_prefix,
            state_schema=schema,
        ) as saver:
            yield saver

    config, _ = await pause_under_v1(opener)
    async with opener(None) as unaware:
        with pytest.raises(KeyError, match="currency"):
            await build_graph(unaware).ainvoke(Command(resume=DECISION), config)


# -- across processes -----------------------------------------------------------------------


def deploy(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("mode", DUAL_MODES)
def test_version_1_pauses_the_case_in_one_process_and_version_2_finishes_it_in_another(
    mode: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread_id = new_thread_id()
    stores = [redis_url, pg_dsn, redis_prefix, mode, thread_id]

    paused = deploy(*stores, "v1")
    resumed = deploy(*stores, "v2")

    assert paused["next"] == ["policy_agent"] and paused["schema_version"] == 1
    assert "currency" not in paused["billing"]
    assert resumed["next"] == [] and resumed["schema_version"] == 2
    assert resumed["billing"]["currency"] == "USD"
    assert APPROVED in resumed["final_response"]


# -- dualsaver migrate ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", DUAL_MODES)
async def test_migrate_shows_the_upgrade_then_writes_it_as_a_new_checkpoint(
    mode: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    @asynccontextmanager
    async def opener(schema: StateSchema | None) -> AsyncIterator[BaseCheckpointSaver]:
        async with open_saver(
            f"dual_{mode}", redis_url=redis_url, pg_dsn=pg_dsn, prefix=redis_prefix,
            state_schema=schema,
        ) as saver:  # fmt: skip
            yield saver

    config, paused = await pause_under_v1(opener)
    thread_id = config["configurable"]["thread_id"]
    env = {
        "DUALSAVER_REDIS_URL": redis_url,
        "DUALSAVER_POSTGRES_URL": pg_dsn,
        "DUALSAVER_PREFIX": redis_prefix,
        "DUALSAVER_MODE": mode,
        "COLUMNS": "200",
    }

    def migrate(*args: str) -> Any:
        return CliRunner().invoke(cli_app, ["migrate", thread_id, *args], env=env)

    schema = "langgraph_dualsaver.app:STATE_SCHEMA"
    dry = await asyncio.to_thread(migrate, "--state-schema", schema, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "version 1 -> 2" in dry.output and "+ billing.currency = 'USD'" in dry.output
    assert "dry run: nothing written" in dry.output
    async with opener(None) as raw:
        assert len([item async for item in raw.alist(config)]) == 4
        latest = await raw.aget_tuple(config)
    assert latest is not None and latest.checkpoint["id"] == paused.checkpoint["id"]

    for bad, says in (
        ("nowhere", "must be module:NAME"),
        ("tests.schema_helpers:DECISION", "not a StateSchema"),
        ("no_such_module:X", "cannot import"),
    ):
        wrong = await asyncio.to_thread(migrate, "--state-schema", bad)
        assert wrong.exit_code == 1 and says in wrong.output, wrong.output
    refused = await asyncio.to_thread(migrate, "--state-schema", "tests.schema_helpers:V1")
    assert refused.exit_code == 0 and "already" in refused.output  # v1 -> v1: nothing to do

    written = await asyncio.to_thread(migrate, "--state-schema", schema, "--write")
    assert written.exit_code == 0, written.output
    assert "written as checkpoint" in written.output
    too_new = await asyncio.to_thread(migrate, "--state-schema", "tests.schema_helpers:V1")
    assert too_new.exit_code == 1
    assert "newer than this code's 1" in too_new.output
    async with opener(None) as raw:
        copy = await raw.aget_tuple(config)
        history = [item async for item in raw.alist(config)]
        assert copy is not None
        assert copy.metadata["source"] == "update"
        assert copy.metadata[SCHEMA_VERSION_KEY] == 2 and copy.metadata[UPGRADED_FROM_KEY] == 1
        assert copy.parent_config is not None
        assert copy.parent_config["configurable"]["checkpoint_id"] == paused.checkpoint["id"]
        assert billing(copy)["currency"] == "USD"  # stored upgraded: no upgrade needed
        assert len(history) == 5
        # even a deployment that knows no schema finishes the case now
        result = await build_graph(raw).ainvoke(Command(resume=DECISION), config)
    assert APPROVED in result["final_response"]
