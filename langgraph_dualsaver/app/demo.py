"""``make demo``: the case_8842 story, told from what the stores hold.

"I was charged twice, and I still can't log in." On embedded Valkey and PostgreSQL
(zero configuration, through ``DualSaver.from_env()``) or on the servers in
``DUALSAVER_REDIS_URL`` / ``DUALSAVER_POSTGRES_URL``:

1. the $650 variant runs to the human-review interrupt;
2. a child process runs the seed case and is killed with SIGKILL after billing and
   account finished; this process resumes the thread and they do not run again;
3. the reviewer answers with ``Command(resume=...)``;
4. time travel: the history, and a fork from the checkpoint after billing;
5. ``update_state(..., as_node="policy_agent")`` corrects a decision;
6. the audit trail from PostgreSQL;
7. where each thing lives: Valkey keys, PostgreSQL rows, the outbox.

Every claim the story makes is checked; a failed check exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot
from rich.columns import Columns
from rich.console import Console

from langgraph_dualsaver import DualSaver
from langgraph_dualsaver.app.counters import RunCounters
from langgraph_dualsaver.app.crash import both_stores_hold, kill_mid_run
from langgraph_dualsaver.app.graph import build_graph, new_case, new_thread_id, thread_config
from langgraph_dualsaver.app.services import (
    LARGE_DUPLICATE_CUSTOMER,
    REQUEST_TEXT,
    SEED_CUSTOMER,
)
from langgraph_dualsaver.app.state import PolicyResult, WorkflowState
from langgraph_dualsaver.app.tiers import where_it_lives
from langgraph_dualsaver.app.views import (
    audit_table,
    counters_table,
    history_table,
    interrupt_panel,
    short_id,
    state_table,
)
from langgraph_dualsaver.embedded import default_data_dir
from langgraph_dualsaver.redact import redact

__all__ = ["DemoCheckFailed", "main", "tell_story"]


class DemoCheckFailed(AssertionError):
    """Something the story claims did not hold on the stores."""


def check(condition: bool, claim: str, console: Console) -> None:
    if not condition:
        raise DemoCheckFailed(claim)
    console.print(f"[green]\u2714[/] {claim}")


@dataclass(frozen=True)
class Story:
    """What every step of the story works on: one open saver, the graph compiled with
    it, the run counters and the two threads (the seed case and its $650 variant)."""

    saver: DualSaver
    console: Console
    graph: CompiledStateGraph[WorkflowState, None, WorkflowState, WorkflowState]
    counters_path: Path
    counters: RunCounters
    seed_thread: str
    review_thread: str

    @property
    def seed(self) -> RunnableConfig:
        return thread_config(self.seed_thread)

    @property
    def review(self) -> RunnableConfig:
        return thread_config(self.review_thread)

    def check(self, condition: bool, claim: str) -> None:
        check(condition, claim, self.console)


async def tell_story(saver: DualSaver, console: Console, work_dir: Path) -> None:
    """Steps 1 to 7 on one open saver; ``work_dir`` holds the run counters file."""
    counters_path = work_dir / "runs.json"
    counters = RunCounters(counters_path)
    seed_thread = new_thread_id()
    story = Story(
        saver=saver,
        console=console,
        graph=build_graph(saver, counters=counters),
        counters_path=counters_path,
        counters=counters,
        seed_thread=seed_thread,
        review_thread=f"{seed_thread}-650",
    )
    await run_to_the_interrupt(story)
    seed_end = await crash_and_resume(story)
    await reviewer_answers(story)
    await time_travel(story, seed_end)
    await correct_the_decision(story)
    await audit_trail(story)
    await show_where_it_lives(story)


async def run_to_the_interrupt(story: Story) -> None:
    """1. The $650 variant runs until policy_agent waits for a human."""
    console, graph = story.console, story.graph
    console.rule("[bold]1. The $650 variant runs to the human-review interrupt")
    console.print(f"customer {LARGE_DUPLICATE_CUSTOMER}, thread [bold]{story.review_thread}[/]")
    await graph.ainvoke(new_case(LARGE_DUPLICATE_CUSTOMER), story.review)
    waiting = await graph.aget_state(story.review)
    console.print(state_table(waiting, "read back from the saver"))
    console.print(interrupt_panel(waiting))
    rows = await story.saver.durable.athread_info(story.review_thread)
    story.check(waiting.next == ("policy_agent",), "interrupted: policy_agent waits for a human")
    story.check(
        rows["checkpoints"] >= 3,
        f"PostgreSQL already holds the paused run ({rows['checkpoints']} checkpoints, "
        f"{rows['writes']} writes): an interrupt forces the outbox through",
    )


async def crash_and_resume(story: Story) -> StateSnapshot:
    """2. A child process runs the seed case and is killed after billing and account;
    this process resumes it, and they do not run again. Returns the finished state."""
    console, graph, seed, seed_thread = story.console, story.graph, story.seed, story.seed_thread
    console.rule("[bold]2. Crash and resume: SIGKILL a process mid-run")
    console.print(f"customer {SEED_CUSTOMER} (the seed case), thread [bold]{seed_thread}[/]")

    env = {**os.environ, "DUALSAVER_MODE": story.saver.mode}
    acknowledged = both_stores_hold(graph, story.saver, seed, "policy_agent")
    killed = await kill_mid_run(
        seed_thread, SEED_CUSTOMER, story.counters_path, acknowledged, env=env
    )
    story.check(
        killed.returncode == -9,
        f"killed child pid {killed.pid} with SIGKILL before {killed.held_node} "
        f"(exit code {killed.returncode})",
    )
    crashed = await graph.aget_state(seed)
    console.print(state_table(crashed, "what the stores hold after the crash"))
    after_crash = story.counters.get(seed_thread)
    console.print(counters_table(after_crash, "node runs, counted outside the graph state"))
    story.check(
        after_crash == {"intake": 1, "billing_agent": 1, "account_agent": 1},
        "the killed child ran intake, billing_agent and account_agent; policy_agent never started",
    )
    console.print(f"resuming in this process (pid {os.getpid()}): graph.ainvoke(None, config)")
    await graph.ainvoke(None, seed)
    resumed = story.counters.get(seed_thread)
    console.print(counters_table(resumed, "node runs after the resume"))
    story.check(
        resumed == {**after_crash, "policy_agent": 1, "response_agent": 1},
        "resumed: intake, billing_agent and account_agent ran once in all "
        "(not again after the crash); only policy_agent and response_agent ran here",
    )
    seed_end = await graph.aget_state(seed)
    console.print(state_table(seed_end, "the seed case, finished"))
    story.check(
        seed_end.values["policy"]["approved"] is True,
        "the $49.99 duplicate was refunded without a human (under the $500 limit)",
    )
    return seed_end


async def reviewer_answers(story: Story) -> None:
    """3. The human reviewer's answer resumes the $650 variant."""
    console, graph = story.console, story.graph
    console.rule("[bold]3. Human in the loop: the reviewer answers")
    decision = {"approved": True, "reviewer": "ana@support", "note": "bank confirms it"}
    console.print(f"graph.ainvoke(Command(resume={decision!r}), config)")
    await graph.ainvoke(Command(resume=decision), story.review)
    reviewed = await graph.aget_state(story.review)
    console.print(state_table(reviewed, f"thread {story.review_thread}"))
    story.check(
        reviewed.next == () and reviewed.values["policy"]["requires_human_review"] is True,
        "resumed with the reviewer's decision: $650.00 refund approved by ana@support",
    )


async def time_travel(story: Story, seed_end: StateSnapshot) -> None:
    """4. The seed case's history, and a fork from the checkpoint after billing that
    leaves the original branch (``seed_end``) intact."""
    console, graph, seed = story.console, story.graph, story.seed
    console.rule("[bold]4. Time travel: the history, and a fork after billing")
    history = [s async for s in graph.aget_state_history(seed)]
    console.print(history_table(history, f"get_state_history, thread {story.seed_thread}"))
    after_billing = next(s for s in history if s.next == ("policy_agent",))
    changed = {**after_billing.values["billing"], "duplicate_amount": 650.00}
    console.print(
        f"fork from checkpoint {short_id(after_billing.config['configurable']['checkpoint_id'])}"
        " (step after billing) with the duplicate changed to $650.00"
    )
    fork_config = await graph.aupdate_state(
        after_billing.config, {"billing": changed}, as_node="billing_agent"
    )
    await graph.ainvoke(None, fork_config)
    fork = await graph.aget_state(seed)
    intact = await graph.aget_state(seed_end.config)
    console.print(
        Columns([state_table(intact, "original branch"), state_table(fork, "forked branch")])
    )
    story.check(fork.next == ("policy_agent",), "the fork went to human review instead")
    story.check(
        intact.values == seed_end.values,
        "the original branch is intact (same checkpoint, same values)",
    )


async def correct_the_decision(story: Story) -> None:
    """5. ``update_state(..., as_node="policy_agent")`` replaces the decision, and the
    run continues from it."""
    console, graph, seed = story.console, story.graph, story.seed
    console.rule('[bold]5. update_state(..., as_node="policy_agent") corrects the decision')
    correction = PolicyResult(
        approved=False,
        reason="supervisor: the second charge was already refunded by the bank",
        requires_human_review=False,
    )
    corrected = await graph.aupdate_state(seed, {"policy": correction}, as_node="policy_agent")
    pending = await graph.aget_state(corrected)
    story.check(
        pending.next == ("response_agent",),
        "recorded as policy_agent's output: next is response_agent",
    )
    await graph.ainvoke(None, corrected)
    final = await graph.aget_state(seed)
    console.print(state_table(final, "the corrected branch, finished"))
    story.check(final.values["policy"] == correction, "the run continued from the correction")
    console.print(history_table([s async for s in graph.aget_state_history(seed)], "all branches"))


async def audit_trail(story: Story) -> None:
    """6. The audit trail from PostgreSQL names each section's writer."""
    story.console.rule("[bold]6. The audit trail, from PostgreSQL")
    entries = await story.saver.aaudit(story.seed_thread)
    story.console.print(audit_table(entries))
    writers = {e.node for e in entries if e.channel in ("billing", "account", "policy")}
    story.check(
        {"billing_agent", "account_agent", "policy_agent"} <= writers,
        "each section's writer is on record: billing_agent, account_agent, policy_agent",
    )


async def show_where_it_lives(story: Story) -> None:
    """7. Valkey keys, PostgreSQL rows and the outbox; the outbox ends empty."""
    console, saver = story.console, story.saver
    console.rule("[bold]7. Where each thing lives")
    console.print(await where_it_lives(saver, story.seed_thread))
    moved = await saver.aflush()
    stats = await saver.astats()
    story.check(
        stats.outbox_length == 0,
        f"saver.aflush() moved {moved} more entries; outbox lag now {stats.outbox_length}",
    )
    console.print(f"threads kept for inspection: {story.seed_thread}, {story.review_thread}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The case_8842 reference app, end to end.")
    parser.add_argument("--mode", choices=("write_behind", "write_through"), default=None)
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    started = time.monotonic()
    console.rule(f'[bold]case_8842: "{REQUEST_TEXT}"')
    log = _log_to_file()
    saver = DualSaver.from_env(mode=args.mode)
    console.print(
        f"DualSaver.from_env(): mode {saver.mode}; Valkey: {_where('DUALSAVER_REDIS_URL')}; "
        f"PostgreSQL: {_where('DUALSAVER_POSTGRES_URL')}; the savers' log: {log}"
    )
    work_dir = Path(tempfile.mkdtemp(prefix="case_8842-"))

    async def run() -> None:
        try:
            await tell_story(saver, console, work_dir)
        finally:
            await saver.aclose()

    try:
        asyncio.run(run())
    except DemoCheckFailed as failed:
        console.print(f"[red]\u2718 {failed}[/]")
        return 1
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    console.rule(f"[bold green]done in {time.monotonic() - started:.1f} s")
    return 0


def _log_to_file() -> Path:
    """The savers' own log lines (a Redis seen for the first time, a restart detected)
    go to a file beside the embedded servers' data, where an operator looks, so the
    terminal shows only the story."""
    path = default_data_dir() / "demo.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("langgraph_dualsaver")
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    return path


def _where(variable: str) -> str:
    """The server a URL variable names (never its password), or the embedded one."""
    url = os.environ.get(variable)
    if url:
        return redact(url)
    return f"embedded, data in {default_data_dir()}"


if __name__ == "__main__":
    raise SystemExit(main())
