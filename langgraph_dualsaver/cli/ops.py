"""Commands that run things: ``up``, ``setup``, ``status``, ``flush``, ``prune``, ``delete``."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from langgraph_dualsaver.chain.deadletters import DEAD_LETTER_CAP
from langgraph_dualsaver.cli import render
from langgraph_dualsaver.cli import retention as retention_cli
from langgraph_dualsaver.cli.compression import (
    SAMPLE_ROWS,
    describe_offload,
    offload_summary,
    summarize,
)
from langgraph_dualsaver.cli.compression import describe as describe_compression
from langgraph_dualsaver.cli.data import hot_thread_ids, thread_presence
from langgraph_dualsaver.cli.deadletters import cap_warnings
from langgraph_dualsaver.cli.inspect import not_found
from langgraph_dualsaver.cli.probe import (
    PostgresFacts,
    RedisFacts,
    Unreachable,
    warnings_for,
)
from langgraph_dualsaver.cli.session import (
    CliError,
    Target,
    handle_errors,
    open_saver,
    probe_both,
    resolve_urls,
    run,
    saver_for,
    target_of,
    thread_arg,
)
from langgraph_dualsaver.errors import DualSaverError
from langgraph_dualsaver.redact import redact

if TYPE_CHECKING:
    from langgraph_dualsaver.chain.saver import DualSaver
    from langgraph_dualsaver.durable.retention import RetentionReport
    from langgraph_dualsaver.metrics import PrometheusEndpoint
    from langgraph_dualsaver.retention import Retention

__all__ = ["delete", "flush", "prune", "setup", "status", "up"]

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


# -- up ---------------------------------------------------------------------------------


@handle_errors
def up(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Data directory of the servers (default: $DUALSAVER_HOME, else "
            "~/.local/share/langgraph-dualsaver; as root /var/lib/langgraph-dualsaver).",
        ),
    ] = None,
) -> None:
    """Run the embedded Valkey and PostgreSQL in the foreground until Ctrl-C or SIGTERM.

    Prints their URLs and the export lines that point other shells (and every
    dualsaver command, and DualSaver.from_env()) at them. Their data stays in the
    data directory, so the next `dualsaver up` finds it again.

    Example: dualsaver up --home /tmp/dualsaver
    """
    from langgraph_dualsaver.embedded import (
        EmbeddedPostgres,
        EmbeddedServerError,
        EmbeddedValkey,
        default_data_dir,
        shared_servers,
    )

    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    root = home or default_data_dir()
    try:
        try:
            servers = shared_servers(root)
        except (EmbeddedServerError, DualSaverError, OSError) as exc:
            raise CliError(f"the embedded servers did not start: {exc}") from exc
        try:
            valkey_pid = next(
                (s.pid for s in servers.started if isinstance(s, EmbeddedValkey)), None
            )
            postgres_pid = next(
                (s.pid for s in servers.started if isinstance(s, EmbeddedPostgres)), None
            )
            lines = [  # the export lines are for copying: they keep the URLs whole
                f"Valkey      {redact(servers.redis_url)}  {_pid(valkey_pid)}",
                f"PostgreSQL  {redact(servers.postgres_url)}  {_pid(postgres_pid)}",
                f"data in     {root}",
                "",
                f"export DUALSAVER_REDIS_URL={servers.redis_url}",
                f"export DUALSAVER_POSTGRES_URL={servers.postgres_url}",
                "",
            ]
            if not servers.started:
                lines.append("both were already running, started by another process; nothing to do")
                print("\n".join(lines), flush=True)
                return
            lines.append("Ctrl-C or SIGTERM stops them.")
            print("\n".join(lines), flush=True)
            while not stop.wait(0.2):
                dead = [s for s in servers.started if not s.is_running()]
                if dead:
                    names = ", ".join(type(s).__name__ for s in dead)
                    raise CliError(f"{names} exited on its own; see its log in {root}")
        finally:
            servers.stop()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _pid(pid: int | None) -> str:
    return f"(pid {pid})" if pid is not None else "(already running)"


# -- setup ------------------------------------------------------------------------------


@handle_errors
def setup(ctx: typer.Context) -> None:
    """Create or migrate the PostgreSQL tables, create the outbox consumer group, and
    check that Redis' eviction policy cannot drop data. Idempotent; safe to run from
    several processes at once.

    Example: DUALSAVER_POSTGRES_URL=postgresql://... dualsaver setup
    """
    target = target_of(ctx)

    async def go() -> tuple[RedisFacts, PostgresFacts]:
        async with open_saver(target, prepare=False) as saver:
            await saver.asetup()
        redis_url, postgres_url = resolve_urls(target)
        redis, postgres = await probe_both(redis_url, postgres_url, target.timeouts, target.schema)
        for found in (redis, postgres):
            if isinstance(found, Unreachable):
                raise found
        return redis, postgres  # type: ignore[return-value]

    redis, postgres = run(go)
    typer.echo(
        f"PostgreSQL {postgres.version} at {postgres.url}: dualsaver schema at version "
        f"{postgres.schema_version}"
    )
    typer.echo(
        f"{redis.server} {redis.version} at {redis.url}: maxmemory-policy "
        f"{redis.maxmemory_policy or 'unknown'}, outbox group ready (prefix {target.prefix!r})"
    )
    for warning in warnings_for(redis, postgres):
        typer.echo(f"warning: {warning}")
    typer.echo("ready")


# -- status -----------------------------------------------------------------------------


@handle_errors
def status(ctx: typer.Context, as_json: Json = False) -> None:
    """Outbox length and age, dead letters, threads per tier, degraded mode, server
    versions and the persistence settings that weaken the guarantees.

    Exits 1 when a store is unreachable (after printing what it could find).

    Example: dualsaver status --json
    """
    target = target_of(ctx)
    report = run(lambda: _status(target))
    if as_json:
        render.print_json(report)
    else:
        _print_status(report)
    down = [side for side in (report["redis"], report["postgres"]) if not side["reachable"]]
    for side in down:
        typer.echo(f"error: {side['error']}", err=True)
    if down:
        raise typer.Exit(1)


async def _status(target: Target) -> dict[str, Any]:

    redis_url, postgres_url = resolve_urls(target)
    redis, postgres = await probe_both(redis_url, postgres_url, target.timeouts, target.schema)
    report: dict[str, Any] = {
        "prefix": target.prefix,
        "schema": target.schema,
        "redis": _facts(redis),
        "postgres": _facts(postgres),
        "outbox": None,
        "threads": {"hot": None, "durable": None},
        "degraded": isinstance(redis, Unreachable),
        "compression": None,
        "offload": None,
    }
    stats = None
    sample: list[tuple[str, int, bytes]] | None = None
    dead_letters_near_cap: list[str] = []
    async with saver_for(target, redis_url, postgres_url) as saver:
        if isinstance(redis, RedisFacts):
            stats = await saver.astats()
            report["outbox"] = {
                "length": stats.outbox_length,
                "oldest_pending_age_s": stats.oldest_pending_age_s,
                "dead_letters": stats.dead_letters,
                "dead_letter_cap": DEAD_LETTER_CAP,
            }
            dead_letters_near_cap = await cap_warnings(saver)
            report["threads"]["hot"] = len(await hot_thread_ids(saver))
        if isinstance(postgres, PostgresFacts) and postgres.schema_version >= 0:
            report["threads"]["durable"] = len(await saver.durable.athreads())
            sample = await saver.durable.asample_values(SAMPLE_ROWS)
            report["compression"] = summarize(sample)
        if saver.offload is not None:
            report["offload"] = await asyncio.to_thread(offload_summary, saver.offload, sample)
    report["warnings"] = (
        warnings_for(
            redis if isinstance(redis, RedisFacts) else None,
            postgres if isinstance(postgres, PostgresFacts) else None,
            outbox_age_s=stats.oldest_pending_age_s if stats else None,
            dead_letters=(stats.dead_letters or 0) if stats else 0,
        )
        + dead_letters_near_cap
    )
    if report["degraded"]:
        report["warnings"].insert(
            0,
            "Redis is unreachable: applications read and write PostgreSQL directly "
            "(degraded mode) until it is back",
        )
    return report


def _facts(found: RedisFacts | PostgresFacts | Unreachable) -> dict[str, Any]:
    if isinstance(found, Unreachable):
        return {"reachable": False, "url": redact(found.url), "error": str(found)}
    return {"reachable": True, **dataclasses.asdict(found)}


def _print_status(report: dict[str, Any]) -> None:
    out = render.console()
    redis, postgres = report["redis"], report["postgres"]
    rows: list[tuple[str, Any]] = []
    if redis["reachable"]:
        rows += [
            ("Redis", f"{redis['server']} {redis['version']} at {redis['url']}"),
            ("  appendonly", f"{redis['appendonly']} (appendfsync {redis['appendfsync']})"),
            ("  maxmemory-policy", redis["maxmemory_policy"]),
        ]
    else:
        rows.append(("Redis", Text(f"UNREACHABLE at {redis['url']}", style="bold red")))
    if postgres["reachable"]:
        schema = postgres["schema_version"]
        rows += [
            ("PostgreSQL", f"{postgres['version']} at {postgres['url']}"),
            ("  fsync", postgres["fsync"]),
            ("  synchronous_commit", postgres["synchronous_commit"]),
            ("  schema version", "not set up" if schema < 0 else schema),
        ]
    else:
        rows.append(("PostgreSQL", Text(f"UNREACHABLE at {postgres['url']}", style="bold red")))
    rows.append(("prefix", report["prefix"]))
    if report["schema"] is not None:
        rows.append(("schema", report["schema"]))
    outbox = report["outbox"]
    if outbox is not None:
        age = outbox["oldest_pending_age_s"]
        rows += [
            ("outbox", f"{outbox['length']} entries not yet in PostgreSQL"),
            ("  oldest entry", "-" if age is None else f"{age:.1f} s old"),
            ("  dead letters", outbox["dead_letters"]),
        ]
    threads = report["threads"]
    rows += [
        ("threads in Redis", "?" if threads["hot"] is None else threads["hot"]),
        ("threads in PostgreSQL", "?" if threads["durable"] is None else threads["durable"]),
        ("degraded mode", "yes (Redis unreachable)" if report["degraded"] else "no"),
    ]
    if report["compression"] is not None:
        rows.append(("compression", describe_compression(report["compression"])))
    if report["offload"] is not None:
        rows.append(("offload", describe_offload(report["offload"])))
    out.print(render.kv_table(rows))
    for warning in report["warnings"]:
        out.print(Text(f"warning: {warning}", style="yellow"))
    if not report["warnings"]:
        out.print("no warnings: nothing weakens the guarantees")


# -- flush ------------------------------------------------------------------------------


@handle_errors
def flush(
    ctx: typer.Context,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep flushing as a worker until SIGINT/SIGTERM, which finish the "
            "current batch and exit 0.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for the outbox to drain (once).")
    ] = 30.0,
    as_json: Json = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            show_default=False,
            help="With --follow: serve Prometheus metrics (outbox gauges, flush counters "
            "and latency) at http://HOST:PORT/metrics. Needs the 'metrics' extra.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address the metrics endpoint listens on.")
    ] = "0.0.0.0",
    idle: retention_cli.Idle = None,
    idle_action: retention_cli.IdleAction = "keep_latest",
    keep_last: retention_cli.KeepLast = None,
    max_age: retention_cli.MaxAge = None,
    delete_waiting: retention_cli.DeleteWaiting = False,
    retention_every: Annotated[
        str,
        typer.Option(
            "--retention-every",
            help="With a retention policy: how often the workers start a sweep.",
        ),
    ] = "1h",
) -> None:
    """Move the outbox to PostgreSQL: drain it once, or run as a flusher worker.

    Any number of workers can run at once (one consumer group); entries a dead
    worker held are reclaimed. With a retention policy (--idle, --keep-last,
    --max-age), workers also enforce it beside their passes, one worker at a time.

    Example: dualsaver flush --follow --metrics-port 9464

    Example: dualsaver flush --follow --idle 30d --keep-last 50 --max-age 7d
    """
    if metrics_port is not None and not follow:
        raise typer.BadParameter("needs --follow", param_hint="--metrics-port")
    policy = None
    if idle is not None or keep_last is not None or max_age is not None:
        if not follow:
            raise typer.BadParameter("a retention policy needs --follow (or use prune)")
        every = retention_cli.duration_option(retention_every, "--retention-every")
        policy = retention_cli.policy_from(
            idle, idle_action, keep_last, max_age, delete_waiting, interval=every
        )
    target = target_of(ctx)

    async def once() -> dict[str, Any]:
        async with open_saver(target) as saver:
            moved = await saver.aflush(timedelta(seconds=timeout))
            return {"flushed": moved, "outbox_length": await saver.alag()}

    async def worker() -> dict[str, Any]:
        async with open_saver(target) as saver:
            flusher = saver.flusher
            if policy is not None:
                flusher.retention = retention_cli.sweeper(saver, policy)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in _STOP_SIGNALS:
                loop.add_signal_handler(sig, stop.set)
            endpoint = _serve_metrics(saver, metrics_port, metrics_host)
            try:
                if not as_json:
                    serving = f"; metrics at {endpoint.url}" if endpoint else ""
                    if policy is not None:
                        serving += f"; retention: {policy.describe()}"
                    typer.echo(
                        f"flushing the outbox of prefix {target.prefix!r} as consumer "
                        f"{flusher.consumer}; Ctrl-C or SIGTERM stops after the current "
                        f"batch{serving}"
                    )
                await flusher.run_forever(stop)
            finally:
                if endpoint is not None:
                    endpoint.close()
                for sig in _STOP_SIGNALS:
                    loop.remove_signal_handler(sig)
            return {
                "flushed": flusher.flushed,
                "dead_lettered": flusher.dead_lettered,
                "outbox_length": await saver.alag(),
            }

    result = run(worker if follow else once)
    if as_json:
        render.print_json(result)
    elif follow:
        typer.echo(f"stopped; flushed {result['flushed']} entries")
    else:
        typer.echo(
            f"flushed {result['flushed']} entries; {result['outbox_length']} left in the outbox"
        )


def _serve_metrics(saver: DualSaver, port: int | None, host: str) -> PrometheusEndpoint | None:
    """The worker's Prometheus endpoint, reporting its saver's outbox and flushes."""
    if port is None:
        return None
    from langgraph_dualsaver import metrics

    try:
        endpoint = metrics.serve_prometheus(port, host)
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    metrics.watch(saver)
    return endpoint


# -- prune and delete -------------------------------------------------------------------


@handle_errors
def prune(
    ctx: typer.Context,
    thread_ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="The threads to prune (with --keep-latest or --delete); none with a "
            "retention policy (--idle, --keep-last, --max-age), which covers every thread.",
            show_default=False,
        ),
    ] = None,
    keep_latest: Annotated[
        bool,
        typer.Option(
            "--keep-latest",
            help="Keep each namespace's latest checkpoint (and its ancestors "
            "that DeltaChannels need); remove the rest.",
        ),
    ] = False,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove every checkpoint of the threads.")
    ] = False,
    idle: retention_cli.Idle = None,
    idle_action: retention_cli.IdleAction = "keep_latest",
    keep_last: retention_cli.KeepLast = None,
    max_age: retention_cli.MaxAge = None,
    delete_waiting: retention_cli.DeleteWaiting = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="With a policy: list what would go, change nothing."),
    ] = False,
    yes: Yes = False,
    as_json: Json = False,
) -> None:
    """Prune threads in both tiers: --keep-latest or --delete (exactly one), or every
    thread by a retention policy (--idle, --keep-last, --max-age; see README, Retention).

    The outbox is flushed first, so nothing leaves Redis before it is durable.
    --delete and a policy ask for confirmation unless --yes or --dry-run.

    Example: dualsaver prune case_8842-1a2b3c4d case_8842-5e6f7a8b --keep-latest

    Example: dualsaver prune --idle 30d --keep-last 50 --max-age 7d --dry-run
    """
    policy_given = (
        idle is not None or keep_last is not None or max_age is not None
        or delete_waiting or dry_run or idle_action != "keep_latest"
    )  # fmt: skip
    if not thread_ids:
        if not policy_given or keep_latest or delete:
            raise typer.BadParameter(
                "give thread ids with --keep-latest or --delete, or a retention policy "
                "(--idle, --keep-last, --max-age) without thread ids",
                param_hint="THREAD_IDS",
            )
        policy = retention_cli.policy_from(idle, idle_action, keep_last, max_age, delete_waiting)
        _retain(target_of(ctx), policy, dry_run=dry_run, yes=yes, as_json=as_json)
        return
    if policy_given:
        raise typer.BadParameter(
            "a retention policy (--idle, --keep-last, --max-age, --dry-run) covers every "
            "thread: give no thread ids with it",
            param_hint="THREAD_IDS",
        )
    if keep_latest == delete:
        raise typer.BadParameter(
            "give exactly one of --keep-latest or --delete", param_hint="--keep-latest/--delete"
        )
    ids = list(dict.fromkeys(thread_arg(t) for t in thread_ids))
    target = target_of(ctx)
    before = run(lambda: _presence_of(target, ids))
    if delete and not yes:
        hot = sum(p["hot"] for p in before.values())
        durable = sum(p["durable"] for p in before.values())
        typer.confirm(
            f"Remove every checkpoint of {len(ids)} thread(s) ({hot} in Redis, "
            f"{durable} in PostgreSQL)?",
            abort=True,
        )
    strategy = "delete" if delete else "keep_latest"

    async def go() -> dict[str, dict[str, int]]:
        async with open_saver(target) as saver:
            await saver.aprune(ids, strategy=strategy)
            return {t: await thread_presence(saver, t) for t in ids}

    after = run(go)
    result: list[dict[str, Any]] = [
        {"thread_id": t, "before": before[t], "after": after[t], "strategy": strategy} for t in ids
    ]
    if as_json:
        render.print_json(result)
        return
    for row in result:
        b, a = row["before"], row["after"]
        typer.echo(
            f"{row['thread_id']}: Redis {b['hot']} -> {a['hot']}, "
            f"PostgreSQL {b['durable']} -> {a['durable']} checkpoints"
        )


def _retain(target: Target, policy: Retention, *, dry_run: bool, yes: bool, as_json: bool) -> None:
    """``prune`` by a retention policy: every thread, both tiers (or a dry run)."""
    if not dry_run and not yes:
        typer.confirm(
            f"Apply retention ({policy.describe()}) to every thread, in Redis and PostgreSQL?",
            abort=True,
        )

    async def go() -> RetentionReport:
        async with open_saver(target) as saver:
            return await saver.aretain(policy, dry_run=dry_run)

    report = run(go)
    if as_json:
        render.print_json(report.as_dict())
        return
    for line in retention_cli.describe_report(report):
        typer.echo(line)


async def _presence_of(target: Target, ids: list[str]) -> dict[str, dict[str, int]]:
    """Checkpoint counts per tier of each thread; an unknown thread is an error."""
    async with open_saver(target) as saver:
        found = {t: await thread_presence(saver, t) for t in ids}
        missing = [t for t, p in found.items() if not p["hot"] and not p["durable"]]
        if missing:
            raise await not_found(saver, target, missing[0])
    return found


@handle_errors
def delete(
    ctx: typer.Context,
    thread_id: Annotated[str, typer.Argument(help="The thread to delete.")],
    yes: Yes = False,
) -> None:
    """Delete a thread in both tiers; a flush still queued never brings it back.

    Asks for confirmation unless --yes.

    Example: dualsaver delete case_8842-1a2b3c4d --yes
    """
    thread_id = thread_arg(thread_id)
    target = target_of(ctx)
    presence = run(lambda: _presence_of(target, [thread_id]))[thread_id]
    if not yes:
        typer.confirm(
            f"Delete thread {thread_id!r} ({presence['hot']} checkpoints in Redis, "
            f"{presence['durable']} in PostgreSQL)? This cannot be undone",
            abort=True,
        )

    async def go() -> None:
        async with open_saver(target) as saver:
            await saver.adelete_thread(thread_id)

    run(go)
    typer.echo(f"deleted thread {thread_id!r}")
