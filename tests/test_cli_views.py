"""The CLI's pure parts, tested directly: history, next nodes, diff, JSON, warnings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.types import Send

from langgraph_dualsaver.cli.probe import PostgresFacts, RedisFacts, redact, warnings_for
from langgraph_dualsaver.cli.views import (
    HistoryRow,
    diff_values,
    history_rows,
    history_tree,
    next_nodes,
    nodes_by_checkpoint,
    parse_filter,
    state_values,
    to_jsonable,
)
from langgraph_dualsaver.durable.audit import AuditEntry

pytestmark = pytest.mark.pure


def v(n: int) -> str:
    return f"{n:032}.0.5"


def checkpoint(
    values: dict[str, Any] | None = None,
    versions: dict[str, Any] | None = None,
    seen: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "v": 4,
        "id": "x",
        "ts": "2026-05-28T10:00:00+00:00",
        "channel_values": values or {},
        "channel_versions": versions or {},
        "versions_seen": seen or {},
    }


def item(
    checkpoint_id: str,
    parent: str | None,
    seen: dict[str, dict[str, Any]],
    *,
    step: int,
    source: str = "loop",
    versions: dict[str, Any] | None = None,
) -> CheckpointTuple:
    def config(cid: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": cid}}

    return CheckpointTuple(
        config=config(checkpoint_id),
        checkpoint=checkpoint(versions=versions, seen=seen),
        metadata={"source": source, "step": step},
        parent_config=config(parent) if parent else None,
        pending_writes=[],
    )


# -- next nodes -------------------------------------------------------------------------


def test_next_nodes_are_branch_channels_holding_an_unseen_value():
    cp = checkpoint(
        values={"branch:to:billing": None, "branch:to:account": None, "x": 1},
        versions={"branch:to:billing": v(3), "branch:to:account": v(3), "x": v(3)},
        seen={"intake": {"branch:to:intake": v(2)}},
    )
    step = next_nodes(cp)
    assert step.nodes == ("account", "billing")
    assert step.triggers == ("branch:to:account", "branch:to:billing")


def test_a_trigger_the_node_has_seen_does_not_run_it_again():
    cp = checkpoint(
        values={"branch:to:policy": None},
        versions={"branch:to:policy": v(4)},
        seen={"policy": {"branch:to:policy": v(4)}},
    )
    assert next_nodes(cp).nodes == ()


def test_a_consumed_trigger_has_no_value_and_runs_nothing():
    # A node's run clears its trigger, which bumps the version past what it saw.
    cp = checkpoint(
        values={"final": "done"},
        versions={"branch:to:response": v(6), "final": v(6)},
        seen={"response": {"branch:to:response": v(5)}},
    )
    assert next_nodes(cp).nodes == ()


def test_input_runs_start_and_send_packets_run_their_nodes():
    cp = checkpoint(
        values={"__start__": {"q": 1}, "__pregel_tasks": [Send("worker", {"n": 1})]},
        versions={"__start__": v(1), "__pregel_tasks": v(1)},
    )
    step = next_nodes(cp)
    assert step.nodes == ("__start__", "worker")
    assert "__pregel_tasks" in step.triggers


def test_integer_versions_from_callers_compare_as_numbers():
    cp = checkpoint(
        values={"branch:to:a": None},
        versions={"branch:to:a": 10},
        seen={"a": {"branch:to:a": 9}},
    )
    assert next_nodes(cp).nodes == ("a",)


def test_state_values_hide_trigger_channels_unless_asked():
    values = {"b": 2, "branch:to:x": None, "__start__": {}, "a": 1}
    assert list(state_values(values)) == ["a", "b"]
    assert set(state_values(values, internal=True)) == set(values)


# -- history ----------------------------------------------------------------------------


def test_history_names_the_nodes_each_step_ran_and_marks_forks():
    base = {"__start__": {"__start__": v(1)}}
    items = [
        item("c0", None, {}, step=-1, source="input"),
        item("c1", "c0", base, step=0),
        item("c2", "c1", {**base, "a": {"x": v(2)}, "b": {"x": v(2)}}, step=1),
        item("c3", "c2", {**base, "a": {"x": v(2)}, "b": {"x": v(2)}, "c": {"y": v(3)}}, step=2),
        # update_state(as_node="c") from c2: a second child, "c" appears with no versions.
        item("c4", "c2", {**base, "a": {"x": v(2)}, "b": {"x": v(2)}, "c": {}}, step=2,
             source="update"),
    ]  # fmt: skip
    rows = history_rows(items)
    assert [r.checkpoint_id for r in rows] == ["c4", "c3", "c2", "c1", "c0"]
    by_id = {r.checkpoint_id: r for r in rows}
    assert by_id["c0"].nodes == ("(input)",)
    assert by_id["c1"].nodes == ("__start__",)
    assert by_id["c2"].nodes == ("a", "b")
    assert by_id["c3"].nodes == ("c",)
    assert by_id["c4"].nodes == ("c",) and by_id["c4"].source == "update"
    assert by_id["c2"].is_fork and by_id["c2"].children == 2
    assert [r.checkpoint_id for r in rows if r.is_fork] == ["c2"]
    assert by_id["c3"].parent_id == "c2" and by_id["c0"].parent_id is None


def test_history_falls_back_to_the_writers_on_the_parent():
    same = {"a": {"x": v(1)}}
    items = [item("c1", None, same, step=0), item("c2", "c1", same, step=1)]
    writers = {"c1": ("a",)}
    rows = {r.checkpoint_id: r for r in history_rows(items, writers)}
    assert rows["c2"].nodes == ("a",)
    assert rows["c1"].nodes == ()  # its parent is gone (pruned): unknown


def test_history_says_which_state_channels_an_update_changed_when_no_node_is_named():
    seen = {"billing_agent": {"branch:to:billing_agent": v(1)}}
    before = {"billing": v(2), "policy": v(1), "branch:to:policy_agent": v(2)}
    after = {**before, "billing": v(4), "branch:to:policy_agent": v(4), "__start__": v(4)}
    items = [item("c1", None, seen, step=2, versions=before),
             item("c2", "c1", seen, step=3, source="update", versions=after),
             item("c3", "c1", seen, step=3, versions={**before, "policy": v(3)})]  # fmt: skip
    rows = {r.checkpoint_id: r for r in history_rows(items)}
    assert rows["c2"].nodes == () and rows["c2"].changed == ("billing",)
    assert rows["c3"].changed == ("policy",)
    assert rows["c1"].changed == ()  # no parent to compare with


def test_nodes_by_checkpoint_keeps_first_write_order_and_skips_nameless_writers():
    def entry(cp: str, node: str | None) -> AuditEntry:
        return AuditEntry(1, "", cp, "t", "", node, "ch", "", datetime.now(timezone.utc))

    found = nodes_by_checkpoint([entry("c1", "b"), entry("c1", "a"), entry("c1", "b"),
                                 entry("c1", None), entry("c2", "x")])  # fmt: skip
    assert found == {"c1": ("b", "a"), "c2": ("x",)}


# -- history as a tree -----------------------------------------------------------------


def chain(*links: tuple[str, str | None, str]) -> list[HistoryRow]:
    """Rows from (id, parent, source) triples, children counted as history_rows does."""
    parents = [parent for _, parent, _ in links]
    return [
        HistoryRow(cid, "", None, source, (), parent, parents.count(cid), None)
        for cid, parent, source in links
    ]


def tree_of(rows: list[HistoryRow]) -> list[tuple[str, str, int, int]]:
    return [(t.row.checkpoint_id, t.art, t.lane, t.depth) for t in history_tree(rows)]


def test_history_tree_keeps_a_chain_in_one_column_and_hangs_each_branch_under_its_fork():
    rows = chain(("c4", "c2", "update"), ("c0", None, "input"), ("c3", "c2", "loop"),
                 ("c1", "c0", "loop"), ("c2", "c1", "loop"), ("c5", "c4", "loop"))  # fmt: skip
    assert tree_of(rows) == [
        ("c0", "", 0, 0),
        ("c1", "", 0, 1),
        ("c2", "", 0, 2),
        ("c3", "├─", 0, 3),  # the older child first, on its parent's lane
        ("c4", "└─", 1, 3),
        ("c5", "  ", 1, 4),
    ]
    assert [t.row.checkpoint_id for t in history_tree(rows) if t.latest] == ["c5"]


def test_history_tree_nests_a_fork_inside_a_branch_and_numbers_lanes_in_print_order():
    rows = chain(("a", None, "input"), ("b", "a", "loop"), ("c", "a", "update"),
                 ("d", "b", "loop"), ("e", "b", "update"), ("f", "d", "loop"))  # fmt: skip
    assert tree_of(rows) == [
        ("a", "", 0, 0),
        ("b", "├─", 0, 1),
        ("d", "│ ├─", 0, 2),
        ("f", "│ │ ", 0, 3),
        ("e", "│ └─", 1, 2),
        ("c", "└─", 2, 1),
    ]


def test_history_tree_starts_a_tree_where_a_parent_is_not_shown():
    rows = chain(("x2", "x1", "loop"), ("x3", "x2", "loop"), ("y2", "gone", "update"))
    assert tree_of(rows) == [("x2", "", 0, 0), ("x3", "", 0, 1), ("y2", "", 1, 0)]


def test_history_tree_draws_a_chain_longer_than_the_recursion_limit():
    ids = [f"c{n:06}" for n in range(5000)]
    rows = chain(*((cid, ids[n - 1] if n else None, "loop") for n, cid in enumerate(ids)))
    lines = history_tree(rows)
    assert [t.row.checkpoint_id for t in lines] == ids
    assert {t.art for t in lines} == {""} and lines[-1].depth == 4999 and lines[-1].latest


# -- diff -------------------------------------------------------------------------------


def test_diff_shows_appended_items_changed_keys_added_and_removed_channels():
    a = {"steps": ["intake"], "policy": {"approved": True, "reason": "x"}, "gone": 1, "same": 2}
    b = {"steps": ["intake", "billing"], "policy": {"approved": False, "reason": "x"},
         "new": "hi", "same": 2, "branch:to:x": None}  # fmt: skip
    changes = {c.channel: c for c in diff_values(a, b)}
    assert "branch:to:x" not in changes
    assert changes["steps"].status == "changed"
    assert changes["steps"].detail == "+1 item(s): ['billing']"
    assert changes["policy"].detail == "approved: True -> False"
    assert changes["new"].status == "added" and changes["new"].after == "hi"
    assert changes["gone"].status == "removed" and changes["gone"].before == 1
    assert changes["same"].status == "unchanged" and changes["same"].detail == ""
    assert "branch:to:x" in {c.channel for c in diff_values(a, b, internal=True)}


def test_diff_of_messages_summarizes_the_new_message():
    first = [HumanMessage("hi", id="1")]
    second = [*first, AIMessage("refund approved", id="2")]
    (change,) = diff_values({"messages": first}, {"messages": second})
    assert change.detail == "+1 item(s): ai: refund approved"


# -- input and JSON ---------------------------------------------------------------------


def test_parse_filter_reads_json_values_and_keeps_plain_strings():
    assert parse_filter(["step=3", "source=loop", "ok=true", 'n="3"', "e="]) == {
        "step": 3,
        "source": "loop",
        "ok": True,
        "n": "3",
        "e": "",
    }
    for bad in ("novalue", "=x"):
        with pytest.raises(ValueError, match="key=value"):
            parse_filter([bad])


@dataclass
class Point:
    x: int
    y: float


def test_to_jsonable_handles_messages_dataclasses_bytes_sets_and_nan():
    value = {
        "messages": [AIMessage("done", id="m1", name="response_agent")],
        "point": Point(1, float("nan")),
        "raw": b"abc",
        "tags": {"b", "a"},
        "when": datetime(2026, 5, 28, tzinfo=timezone.utc),
        "send": Send("worker", {"n": 1}),
        "other": object,
    }
    out = to_jsonable(value)
    json.dumps(out)  # all JSON now
    assert out["messages"][0]["content"] == "done" and out["messages"][0]["type"] == "ai"
    assert out["point"] == {"x": 1, "y": "nan"}
    assert out["raw"] == "<3 bytes>"
    assert out["tags"] == ["a", "b"]
    assert out["when"] == "2026-05-28T00:00:00+00:00"
    assert out["send"]["send"]["node"] == "worker"
    assert out["other"] == repr(object)


# -- probes -----------------------------------------------------------------------------


def redis_facts(**changes: Any) -> RedisFacts:
    base = dict(url="redis://h", server="valkey", version="8.1.8", appendonly="yes",
                appendfsync="everysec", maxmemory_policy="noeviction")  # fmt: skip
    return RedisFacts(**{**base, **changes})


def pg_facts(**changes: Any) -> PostgresFacts:
    base = dict(url="postgresql://h", version="18", fsync="on", synchronous_commit="on",
                full_page_writes="on", schema_version=3, schema_latest=3)  # fmt: skip
    return PostgresFacts(**{**base, **changes})


def test_safe_settings_give_no_warning():
    assert warnings_for(redis_facts(), pg_facts(), outbox_age_s=1.0) == []


@pytest.mark.parametrize(
    ("redis", "postgres", "expected"),
    [
        ({"maxmemory_policy": "allkeys-lru"}, {}, "set it to noeviction"),
        ({"appendonly": "no"}, {}, "set appendonly yes"),
        ({"appendfsync": "no"}, {}, "use everysec"),
        ({"maxmemory_policy": None}, {}, "CONFIG GET is disabled"),
        ({}, {"fsync": "off"}, "fsync is off"),
        ({}, {"synchronous_commit": "off"}, "synchronous_commit is off"),
        ({}, {"full_page_writes": "off"}, "full_page_writes is off"),
        ({}, {"schema_version": 1}, "run `dualsaver setup`"),
    ],
)
def test_each_weak_setting_is_named_with_what_to_do(redis, postgres, expected):
    (warning,) = warnings_for(redis_facts(**redis), pg_facts(**postgres))
    assert expected in warning


def test_an_old_outbox_and_dead_letters_are_warned_about():
    found = warnings_for(None, None, outbox_age_s=600, dead_letters=2)
    assert "is a flusher running?" in found[0]
    assert "2 outbox entries are dead letters" in found[1]


def test_redact_hides_passwords_only():
    assert redact("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("postgresql://u:pw@db/x") == "postgresql://u:***@db/x"
    assert redact("postgresql://u@db/x") == "postgresql://u@db/x"
