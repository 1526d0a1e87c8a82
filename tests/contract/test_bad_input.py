"""Bad input, in every method of every saver kind: a specific ``InvalidInputError``
(also a ``ValueError``) naming what was wrong, and nothing stored anywhere changed:
the kind's whole snapshot (every row, every key under its prefix, after a flush) is
the same after the call as before, and the bystander thread still reads back."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from langgraph_dualsaver.errors import (
    CheckpointTooLargeError,
    InvalidIdError,
    InvalidInputError,
    InvalidMetadataError,
    MissingThreadIdError,
    SerializationError,
)
from tests.contract.conftest import BYSTANDER, LIMITS, Kind
from tests.helpers import checkpoint_of, config, drain
from tests.refusing_serde import Unstorable

pytestmark = pytest.mark.asyncio(loop_scope="package")

Call = Callable[[Any], Awaitable[Any]]

CID = "1ef00000-0000-6000-8000-000000000000"
"""A well-formed checkpoint id (of no stored checkpoint)."""

MISSING = object()
"""``put(cp_id=MISSING)``: a checkpoint without an ``id``."""

BIG = "y" * (LIMITS.max_value_bytes + 1)


def put(
    saver: Any,
    cfg: Any,
    *,
    values: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    cp_id: Any = None,
) -> Awaitable[Any]:
    values = {"x": "v"} if values is None else values
    cp = checkpoint_of(values, dict.fromkeys(values, "1"))
    if cp_id is MISSING:
        del cp["id"]
    elif cp_id is not None:
        cp["id"] = cp_id
    return saver.aput(cfg, cp, {"source": "loop", **(metadata or {})}, dict.fromkeys(values, "1"))


Case = tuple[Call, type[Exception], str]
"""A bad call, the error it must raise, and a pattern its message must match."""


async def assert_each_refused(kind: Kind, cases: dict[str, Case]) -> None:
    """Each call raises its error, and the kind's snapshot stays what it was before
    the first. Every case runs; the failures are reported together, by name."""
    before = await kind.snapshot()
    failures = []
    for name, (call, error, match) in cases.items():
        try:
            with pytest.raises(error, match=match) as raised:
                await call(kind.saver)
            assert isinstance(raised.value, InvalidInputError)  # and so a ValueError
            assert await kind.snapshot() == before, "the stored state changed"
        except (Exception, pytest.fail.Exception) as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
    bystander = await kind.saver.aget_tuple(config(BYSTANDER))
    assert bystander is not None and bystander.checkpoint["channel_values"] == {"x": "kept"}
    assert [w[2] for w in bystander.pending_writes] == ["pending"]


# -- ids: every method that takes a thread ---------------------------------------------

THREAD_CALLS: dict[str, Callable[[Any, Any], Awaitable[Any]]] = {
    "get_tuple": lambda s, t: s.aget_tuple(config(t)),
    "list": lambda s, t: drain(s.alist(config(t))),
    "put": lambda s, t: put(s, config(t)),
    "put_writes": lambda s, t: s.aput_writes(config(t, CID), [("x", 1)], "task"),
    "get_delta_channel_history": lambda s, t: s.aget_delta_channel_history(
        config=config(t), channels=["x"]
    ),
    "delete_thread": lambda s, t: s.adelete_thread(t),
    "copy_thread from": lambda s, t: s.acopy_thread(t, "copy-target"),
    "copy_thread to": lambda s, t: s.acopy_thread(BYSTANDER, t),
    "prune keep_latest": lambda s, t: s.aprune([BYSTANDER, t]),
    "prune delete": lambda s, t: s.aprune([t], strategy="delete"),
}

BAD_THREAD_IDS: dict[str, tuple[Any, type[Exception], str]] = {
    "missing": (None, MissingThreadIdError, r"thread_id.* is missing"),
    "empty": ("", MissingThreadIdError, r"thread_id.* is empty"),
    "not a string": (42, InvalidIdError, "thread_id must be a string, got int"),
    "NUL": ("a\x00b", InvalidIdError, "thread_id contains a NUL character"),
    "lone surrogate": ("a\udc80b", InvalidIdError, "thread_id contains a lone surrogate"),
    "over max_id_bytes": (
        "\u00e9" * 401,  # 401 characters, 802 UTF-8 bytes: the limit counts bytes
        InvalidIdError,
        "thread_id is 802 bytes long; the limit is 800",
    ),
}


def _with(method: Callable[[Any, Any], Awaitable[Any]], value: Any) -> Call:
    return lambda saver: method(saver, value)


@pytest.mark.parametrize("method", list(THREAD_CALLS))
async def test_a_bad_thread_id_is_refused(kind: Kind, method: str) -> None:
    await assert_each_refused(
        kind,
        {
            bad: (_with(THREAD_CALLS[method], thread_id), error, match)
            for bad, (thread_id, error, match) in BAD_THREAD_IDS.items()
            if not (bad == "missing" and method == "list")  # list(None) lists every thread
        },
    )


# -- ids: namespaces and checkpoint ids in configs -----------------------------------------

CONFIG_CALLS: dict[str, Callable[[Any, Any], Awaitable[Any]]] = {
    "get_tuple": lambda s, cfg: s.aget_tuple(cfg),
    "list": lambda s, cfg: drain(s.alist(cfg)),
    "put": lambda s, cfg: put(s, cfg),
    "put_writes": lambda s, cfg: s.aput_writes(cfg, [("x", 1)], "task"),
    "get_delta_channel_history": lambda s, cfg: s.aget_delta_channel_history(
        config=cfg, channels=["x"]
    ),
}

BAD_IDS: dict[str, tuple[Any, str]] = {
    "not a string": (7, "{} must be a string, got int"),
    "NUL": ("a\x00b", "{} contains a NUL character"),
    "lone surrogate": ("\udc80", "{} contains a lone surrogate"),
    "over max_id_bytes": ("\u00e9" * 401, "{} is 802 bytes long; the limit is 800"),
}


@pytest.mark.parametrize("method", list(CONFIG_CALLS))
async def test_a_bad_checkpoint_ns_is_refused(kind: Kind, method: str) -> None:
    call = CONFIG_CALLS[method]
    await assert_each_refused(
        kind,
        {
            bad: (_with(call, config("t", CID, ns=value)), InvalidIdError,
                  match.format("checkpoint_ns"))
            for bad, (value, match) in BAD_IDS.items()
        },
    )  # fmt: skip


def _list_before(saver: Any, checkpoint_id: Any) -> Awaitable[Any]:
    return drain(saver.alist(None, before=config("t", checkpoint_id)))


def _put_with_id(saver: Any, checkpoint_id: Any) -> Awaitable[Any]:
    return put(saver, config("t"), cp_id=checkpoint_id)


@pytest.mark.parametrize("method", [*CONFIG_CALLS, "list before", "put's own id"])
async def test_a_bad_checkpoint_id_is_refused(kind: Kind, method: str) -> None:
    if method == "list before":
        call: Callable[[Any, Any], Awaitable[Any]] = _list_before
    elif method == "put's own id":
        call = _put_with_id
    else:
        call = lambda s, value: CONFIG_CALLS[method](s, config("t", value))  # noqa: E731
    await assert_each_refused(
        kind,
        {
            bad: (_with(call, value), InvalidIdError, match.format("checkpoint_id"))
            for bad, (value, match) in BAD_IDS.items()
        },
    )


NOT_CONFIGS = {
    "a string": "t",
    "configurable a string": {"configurable": "t"},
    "configurable a list": {"configurable": ["thread_id"]},
}


async def test_a_config_that_is_not_a_dict_is_refused(kind: Kind) -> None:
    await assert_each_refused(
        kind,
        {
            f"{method}, {what}": (_with(call, cfg), InvalidInputError, "must be a dict")
            for method, call in CONFIG_CALLS.items()
            for what, cfg in NOT_CONFIGS.items()
        },
    )


# -- values, metadata and ids of what is written ---------------------------------------------

OTHER_CALLS: dict[str, Case] = {
    # put
    "put: a checkpoint without an id": (
        lambda s: put(s, config("t"), cp_id=MISSING),
        InvalidIdError, "checkpoint_id must be a string, got NoneType",
    ),
    "put: a value over max_value_bytes": (
        lambda s: put(s, config("t"), values={"small": "ok", "big": BIG}),
        CheckpointTooLargeError, "channel 'big' serializes to .* bytes.*; the limit is 4,?096",
    ),
    "put: metadata over max_value_bytes": (
        lambda s: put(s, config("t"), metadata={"k": BIG}),
        CheckpointTooLargeError, "metadata is .* bytes as JSON; the limit is 4,?096",
    ),
    "put: a value the serde cannot encode": (
        lambda s: put(s, config("t"), values={"ok": 1, "bad": Unstorable()}),
        SerializationError, "channel 'bad'.*Unstorable",
    ),
    "put: NUL in a metadata key": (
        lambda s: put(s, config("t"), metadata={"bad\x00key": 1}),
        InvalidMetadataError, "NUL",
    ),
    "put: NUL in a metadata value": (
        lambda s: put(s, config("t"), metadata={"source": "lo\x00op"}),
        InvalidMetadataError, "NUL",
    ),
    "put: NUL deep in metadata": (
        lambda s: put(s, config("t"), metadata={"nested": {"list": ["ok", "b\x00d"]}}),
        InvalidMetadataError, "NUL",
    ),
    "put: a lone surrogate in metadata": (
        lambda s: put(s, config("t"), metadata={"k": "v\udfff"}),
        InvalidMetadataError, "lone surrogate",
    ),
    "put: NaN in metadata": (
        lambda s: put(s, config("t"), metadata={"score": math.nan}),
        InvalidMetadataError, "JSON cannot represent",
    ),
    "put: NUL in a channel name": (
        lambda s: put(s, config("t"), values={"x\x00": 1}),
        InvalidIdError, "channel contains a NUL",
    ),
    "put: ids over one index entry": (
        lambda s: put(s, config("t" * 800, ns="n" * 800), values={"c" * 800: 1}),
        InvalidIdError, "max_key_bytes",
    ),
    # put_writes
    "put_writes: no checkpoint_id": (
        lambda s: s.aput_writes(config("t"), [("x", 1)], "task"),
        InvalidIdError, r"put_writes needs config\['configurable'\]\['checkpoint_id'\]",
    ),
    "put_writes: a value over max_value_bytes": (
        lambda s: s.aput_writes(config("t", CID), [("a", 1), ("b", BIG)], "task"),
        CheckpointTooLargeError, "write to 'b' serializes to .* bytes.*; the limit is 4,?096",
    ),
    "put_writes: a value the serde cannot encode": (
        lambda s: s.aput_writes(config("t", CID), [("ok", 1), ("bad", Unstorable())], "task"),
        SerializationError, "write to 'bad'.*Unstorable",
    ),
    "put_writes: NUL in a channel name": (
        lambda s: s.aput_writes(config("t", CID), [("ok", 1), ("x\x00", 2)], "task"),
        InvalidIdError, "channel contains a NUL",
    ),
    "put_writes: NUL in task_id": (
        lambda s: s.aput_writes(config("t", CID), [("x", 1)], "a\x00b"),
        InvalidIdError, "task_id contains a NUL",
    ),
    "put_writes: task_id not a string": (
        lambda s: s.aput_writes(config("t", CID), [("x", 1)], 3),
        InvalidIdError, "task_id must be a string, got int",
    ),
    "put_writes: NUL in task_path": (
        lambda s: s.aput_writes(config("t", CID), [("x", 1)], "task", "a\x00b"),
        InvalidIdError, "task_path must be a string without NUL",
    ),
    "put_writes: ids over one index entry": (
        lambda s: s.aput_writes(config("t" * 790, CID, ns="n" * 790), [("x", 1)], "k" * 800),
        InvalidIdError, "max_key_bytes",
    ),
    # list
    "list: a filter that is a string": (
        lambda s: drain(s.alist(None, filter="source")),
        InvalidInputError, "filter must be a dict of metadata keys and values, got str",
    ),
    "list: a filter that is a list": (
        lambda s: drain(s.alist(None, filter=["source"])),
        InvalidInputError, "filter must be a dict of metadata keys and values, got list",
    ),
    "list: a filter key that is not a string": (
        lambda s: drain(s.alist(None, filter={1: "input"})),
        InvalidMetadataError, "filter keys must be strings, got 1",
    ),
    "list: NaN in a filter": (
        lambda s: drain(s.alist(None, filter={"score": math.nan})),
        InvalidMetadataError, r"filter\['score'\] is nan, which JSON cannot represent",
    ),
    "list: a filter value JSON cannot hold": (
        lambda s: drain(s.alist(None, filter={"source": {"x": object()}})),
        InvalidMetadataError, r"filter\['source'\]\['x'\] is of type object",
    ),
    "list: limit a string": (
        lambda s: drain(s.alist(None, limit="3")),
        InvalidInputError, "limit must be an int or None, got str",
    ),
    "list: limit a float": (
        lambda s: drain(s.alist(None, limit=2.5)),
        InvalidInputError, "limit must be an int or None, got float",
    ),
    "list: before a string": (
        lambda s: drain(s.alist(None, before="1ef")),
        InvalidInputError, "before must be a dict",
    ),
    # prune, delete_for_runs
    "prune: an unknown strategy": (
        lambda s: s.aprune([BYSTANDER], strategy="everything"),
        InvalidInputError, "unknown prune strategy 'everything'; use one of keep_latest, delete",
    ),
    "prune: thread_ids one string": (
        lambda s: s.aprune(BYSTANDER),
        InvalidInputError, "thread_ids must be a sequence of thread ids, not one string",
    ),
    "prune: thread_ids None": (
        lambda s: s.aprune(None),
        InvalidInputError, "thread_ids must be a sequence of thread ids, got NoneType",
    ),
    "delete_for_runs: run_ids one string": (
        lambda s: s.adelete_for_runs("run-1"),
        InvalidInputError, "run_ids must be a sequence of run ids, not one string",
    ),
    "delete_for_runs: run_ids None": (
        lambda s: s.adelete_for_runs(None),
        InvalidInputError, "run_ids must be a sequence of run ids, got NoneType",
    ),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted({case.split(":")[0] for case in OTHER_CALLS}))
async def test_bad_input_is_refused(kind: Kind, method: str) -> None:
    await assert_each_refused(
        kind, {case: OTHER_CALLS[case] for case in OTHER_CALLS if case.startswith(f"{method}:")}
    )


# -- input that is fine but matches, or names, nothing -----------------------------------------


CRAFTED_FILTERS = [
    {"source') OR 1=1 --": "input"},
    {"'; DELETE FROM dualsaver_checkpoints; --": 1},
    {"source": "input' OR '1'='1"},
    {"step": {"$ne": None}},
    {"source": "in\x00put"},
    {"*": "input"},
    {"source": "*"},
    {"source": "inpu?"},
    {"source": "[a-z]*"},
]


async def test_a_filter_crafted_as_sql_or_a_pattern_matches_nothing(kind: Kind) -> None:
    before = await kind.snapshot()
    for crafted in CRAFTED_FILTERS:
        assert await drain(kind.saver.alist(None, filter=crafted)) == [], crafted
        assert await drain(kind.saver.alist(config(BYSTANDER), filter=crafted)) == [], crafted
    # The same key, spelled plainly, does match: the filter really was applied.
    assert len(await drain(kind.saver.alist(config(BYSTANDER), filter={"source": "input"}))) == 1
    assert await kind.snapshot() == before


CRAFTED_THREAD_IDS = [f"{BYSTANDER}' OR '1'='1", "*", "bystande?", "[b]ystander", "bystander*"]


async def test_a_thread_id_crafted_as_sql_or_a_pattern_reads_and_deletes_nothing(
    kind: Kind,
) -> None:
    bystander = await kind.thread_snapshot(BYSTANDER)
    for crafted in CRAFTED_THREAD_IDS:
        assert await kind.saver.aget_tuple(config(crafted)) is None, crafted
        assert await drain(kind.saver.alist(config(crafted))) == [], crafted
        await kind.saver.adelete_thread(crafted)  # the chain records a tombstone for it
    assert await kind.thread_snapshot(BYSTANDER) == bystander


async def test_unknown_run_ids_and_empty_writes_store_nothing(kind: Kind) -> None:
    before = await kind.snapshot()
    await kind.saver.adelete_for_runs(["no-such-run", "another"])
    await kind.saver.adelete_for_runs([])
    await kind.saver.aput_writes(config("t", CID), [], "task")
    await kind.saver.aprune([])
    assert await kind.snapshot() == before


# -- the sync API ------------------------------------------------------------------------------

SYNC_CALLS: dict[str, tuple[Callable[[Any], Any], type[Exception]]] = {
    "get_tuple": (lambda s: s.get_tuple({"configurable": {}}), MissingThreadIdError),
    "put": (lambda s: put_sync(s, config("a\x00")), InvalidIdError),
    "put_writes": (
        lambda s: s.put_writes(config("t", CID), [("x", BIG)], "task"),
        CheckpointTooLargeError,
    ),
    "list": (lambda s: next(s.list(None, limit="3"), None), InvalidInputError),
    "get_delta_channel_history": (
        lambda s: s.get_delta_channel_history(config=config(""), channels=["x"]),
        MissingThreadIdError,
    ),
    "delete_thread": (lambda s: s.delete_thread("a\udc80"), InvalidIdError),
    "copy_thread": (lambda s: s.copy_thread(BYSTANDER, ""), MissingThreadIdError),
    "prune": (lambda s: s.prune([BYSTANDER], strategy="oldest"), InvalidInputError),
    "delete_for_runs": (lambda s: s.delete_for_runs("run-1"), InvalidInputError),
}


def put_sync(saver: Any, cfg: Any) -> Any:
    cp = checkpoint_of({"x": 1}, {"x": "1"})
    return saver.put(cfg, cp, {"source": "loop"}, {"x": "1"})


async def test_the_sync_api_refuses_the_same_input(kind: Kind) -> None:
    before = await kind.snapshot()

    def run_all() -> None:  # the sync bridge, from a thread without an event loop
        for name, (call, error) in SYNC_CALLS.items():
            with pytest.raises(error):
                call(kind.saver)
                pytest.fail(f"{name} did not raise")

    await asyncio.to_thread(run_all)
    assert await kind.snapshot() == before
