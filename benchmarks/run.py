"""Run every saver side by side and write the results as JSON, a table and plots.

    python benchmarks/run.py --grid quick     # about a minute
    python benchmarks/run.py --grid full      # under ten minutes on 2 cores

All savers run in this one process, in this one run, against the same servers: the
machine may be shared and noisy, so only ratios within one run mean anything. A saver
that fails is recorded (its error lands in the JSON and, loudly, in the table) and the
run goes on. Servers come from DUALSAVER_REDIS_URL / DUALSAVER_POSTGRES_URL or are
started from the embedded wheels and always stopped, even on error or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from benchmarks import chain, measures, report  # noqa: E402
from benchmarks.env import (  # noqa: E402
    Servers,
    bench_servers,
    create_database,
    describe_machine,
    describe_servers,
    drop_database,
)
from benchmarks.grid import GRIDS, Grid  # noqa: E402
from benchmarks.savers import SAVERS, OpenSaver, SaverSpec, SaverUnavailable, open_saver  # noqa: E402
from benchmarks.workloads import CaseGraph, case_graph  # noqa: E402

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
STEP_TIMEOUT_S = {"quick": 60.0, "full": 300.0}
TERMINATING = threading.Event()


@dataclass(frozen=True)
class Measure:
    name: str
    applies: Callable[[SaverSpec], bool]
    run: Callable[[OpenSaver, Grid, CaseGraph], Awaitable[list[dict[str, Any]]]]


def _every(spec: SaverSpec) -> bool:
    return True


MEASURES: tuple[Measure, ...] = (
    Measure("graph", _every, measures.graph_throughput),
    Measure("ops", _every, lambda h, g, c: measures.raw_ops(h, g)),
    Measure("history", _every, lambda h, g, c: measures.history_scaling(h, g)),
    Measure("state_size", _every, lambda h, g, c: measures.state_size_scaling(h, g)),
    Measure("bytes_per_step", _every, lambda h, g, c: measures.bytes_per_step(h, g)),
    Measure(
        "outbox",
        lambda spec: spec.name == "dual_write_behind",
        lambda h, g, c: chain.outbox_under_load(h, g),
    ),
    Measure(
        "cold_read",
        lambda spec: spec.name.startswith("dual_"),
        lambda h, g, c: chain.cold_vs_hot(h, g),
    ),
)


class Run:
    """The JSON document of one run, written after every step so a crash loses little."""

    def __init__(self, path: Path, grid: Grid, argv: list[str]) -> None:
        self.path = path
        self.doc: dict[str, Any] = {
            "schema": 1,
            "grid": grid.name,
            "grid_params": {k: v for k, v in vars(grid).items() if k != "name"},
            "command": "python benchmarks/run.py " + shlex.join(argv),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "finished_at": None,
            "machine": describe_machine(),
            "servers": None,
            "graph_source": None,
            "savers": {},
            "results": [],
            "errors": [],
        }

    def error(self, measure: str, saver: str | None, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.doc["errors"].append(
            {"measure": measure, "saver": saver, "error": message, "traceback": tb[-4000:]}
        )
        logging.getLogger("benchmarks").error("%s / %s failed: %s", measure, saver, message)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, default=str))
        tmp.replace(self.path)


async def _floors(servers: Servers, grid: Grid, run: Run, when: str) -> None:
    dsn = await create_database(servers.postgres_url, "floor")
    try:
        records = await measures.floors(servers.redis_url, dsn, grid)
    except Exception as exc:  # recorded and reported; the run goes on
        run.error("floor", None, exc)
        return
    finally:
        await drop_database(servers.postgres_url, dsn)
    for record in records:
        record["when"] = when
    run.doc["results"].extend(records)


async def _measure_all(
    servers: Servers, grid: Grid, specs: list[SaverSpec], names: list[str], run: Run, bar: bool
) -> None:
    run.doc["servers"] = await describe_servers(servers)
    case = case_graph()
    run.doc["graph_source"] = {"source": case.source, "steps_per_invoke": case.steps_per_invoke}
    timeout = STEP_TIMEOUT_S[grid.name]
    selected = [m for m in MEASURES if m.name in names]
    async with contextlib.AsyncExitStack() as stack:
        handles: list[OpenSaver] = []
        for spec in specs:
            entry: dict[str, Any] = {"label": spec.label, "ours": spec.ours, "stores": spec.stores}
            try:
                handle = await asyncio.wait_for(
                    stack.enter_async_context(open_saver(spec, servers)), timeout
                )
            except SaverUnavailable as exc:
                entry.update(available=False, error=str(exc))
            except Exception as exc:  # a saver that does not open is recorded, not fatal
                entry.update(available=False, error=f"{type(exc).__name__}: {exc}")
                run.error("open", spec.name, exc)
            else:
                entry.update(available=True, error=None)
                handles.append(handle)
            run.doc["savers"][spec.name] = entry
        run.save()
        if "floor" in names:
            await _floors(servers, grid, run, "start")
        steps: list[tuple[Measure, OpenSaver, int]] = []
        for measure in selected:
            rounds = grid.graph_rounds if measure.name == "graph" else 1
            for round_ in range(rounds):
                shift = round_ % max(1, len(handles))
                for handle in handles[shift:] + handles[:shift]:  # rotated each round
                    if measure.applies(handle.spec):
                        steps.append((measure, handle, round_))
        progress = tqdm(total=len(steps), unit="step", disable=not bar, file=sys.stderr)
        for measure, handle, round_ in steps:
            if TERMINATING.is_set():
                raise asyncio.CancelledError
            progress.set_description(f"{measure.name}: {handle.spec.label}")
            started = time.perf_counter()
            try:
                records = await asyncio.wait_for(measure.run(handle, grid, case), timeout)
                await asyncio.wait_for(handle.settle(), timeout)
            except asyncio.TimeoutError as exc:
                run.error(measure.name, handle.name, TimeoutError(f"gave up after {timeout:.0f}s"))
                del exc
            except Exception as exc:  # recorded with its traceback; the run goes on
                run.error(measure.name, handle.name, exc)
            else:
                for record in records:
                    if measure.name == "graph":
                        record["round"] = round_
                    if "error" in record:  # one failed point of a measure that went on
                        where = {
                            k: v
                            for k, v in record.items()
                            if k not in ("measure", "saver", "error")
                        }
                        run.doc["errors"].append(
                            {**record, "error": f"{record['error']} (at {where})", "traceback": ""}
                        )
                    else:
                        run.doc["results"].append(record)
            run.doc.setdefault("step_seconds", []).append(
                [measure.name, handle.name, round(time.perf_counter() - started, 2)]
            )
            run.save()
            progress.update()
        progress.close()
        rounds = [r for r in run.doc["results"] if r["measure"] == "graph_round"]
        run.doc["results"].extend(measures.merge_graph_rounds(rounds))
        run.save()
        if "floor" in names:
            await _floors(servers, grid, run, "end")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


async def _terminable(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro``; SIGTERM cancels it (at an await, where cleanup can run) and exits."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        TERMINATING.set()  # checked between steps, should a library swallow the cancel
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await task
    except asyncio.CancelledError:
        if not terminated:
            raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    if terminated:
        raise SystemExit(128 + signal.SIGTERM)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="quick")
    parser.add_argument("--out", type=Path, help="directory for results.json and the plots")
    parser.add_argument("--markdown", type=Path, help="where to write the report")
    parser.add_argument("--savers", help="comma-separated names (default: all)")
    parser.add_argument("--measures", help="comma-separated names (default: all)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--report-only", action="store_true", help="re-render the report from results.json"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    grid = GRIDS[args.grid]
    out = args.out or (HERE / "results" if grid.name == "full" else HERE / "results" / "quick")
    markdown = args.markdown or (HERE / "RESULTS.md" if grid.name == "full" else out / "RESULTS.md")
    json_path = out / "results.json"
    if not args.report_only:
        known = [s.name for s in SAVERS]
        names = args.savers.split(",") if args.savers else known
        unknown = sorted(set(names) - set(known))
        all_measures = ["floor", *(m.name for m in MEASURES)]
        chosen = args.measures.split(",") if args.measures else all_measures
        unknown += sorted(set(chosen) - set(all_measures))
        if unknown:
            print(f"unknown saver or measure: {', '.join(unknown)}", file=sys.stderr)
            return 2
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # SIGTERM unwinds like Ctrl-C, so the servers started here are stopped: outside
        # the event loop by SystemExit, inside it by cancelling the run (_terminable).
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        run = Run(json_path, grid, argv)
        specs = [s for s in SAVERS if s.name in names]
        with bench_servers() as servers:
            try:
                asyncio.run(
                    _terminable(
                        _measure_all(servers, grid, specs, chosen, run, not args.no_progress)
                    )
                )
            finally:
                signal.signal(signal.SIGTERM, _exit_on_sigterm)  # the loop reset it
        run.doc["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        run.save()
    # The full grid's default report also refreshes the README's headline block.
    default_full = grid.name == "full" and args.markdown is None and args.out is None
    report.render(json_path, markdown, out, ROOT / "README.md" if default_full else None)
    print(f"results: {json_path}\nreport:  {markdown}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
