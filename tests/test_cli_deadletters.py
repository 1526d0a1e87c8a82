"""``dualsaver deadletters`` (list, replay, purge) and ``status``'s cap warning, on real
servers. Each test has an empty database and key prefix of its own."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from langgraph_dualsaver.chain.deadletters import DEAD_LETTER_CAP
from tests.helpers import durable_ids, put_chain
from tests.test_cli import Store, data, invoke

BOGUS = {b"r": b"garbage", b"m": b"\x01\x02 a tag, verbatim"}


@pytest.fixture
def store(redis_url: str, pg_dsn: str, redis_prefix: str) -> Store:
    with Store(redis_url, pg_dsn, redis_prefix).saver(background_flush=False) as saver:
        saver.setup()
    return Store(redis_url, pg_dsn, redis_prefix)


def client(store: Store) -> redis.Redis:
    return redis.Redis.from_url(store.redis_url)


def outbox_key(store: Store, shard: int) -> str:
    return f"{store.prefix}:{{{store.prefix}:s{shard}}}:outbox"


def dead_key(store: Store, shard: int) -> str:
    return f"{store.prefix}:{{{store.prefix}:s{shard}}}:dead"


def bogus_dead_letters(store: Store, *shards: int) -> list[str]:
    """A bogus entry in each shard's outbox, flushed into the dead letters; returns the
    outbox entry ids."""
    with client(store) as raw:
        ids = [raw.xadd(outbox_key(store, shard), dict(BOGUS)).decode() for shard in shards]
    with store.saver(background_flush=False) as saver:
        saver.flush()
    return ids


def good_dead_letter(store: Store, thread: str) -> None:
    """A real checkpoint of ``thread`` whose outbox entry was dead-lettered unapplied."""

    async def go() -> None:
        async with store.saver(background_flush=False) as saver:
            await put_chain(saver, thread, 1)
            outbox = saver.flusher.outbox
            entries = await outbox.read(10, own_pending=False)
            assert await outbox.dead_letter_entries(entries, "rejected by a test") == [True]

    asyncio.run(go())


def dead_count(store: Store) -> int:
    with client(store) as raw:
        return sum(raw.xlen(dead_key(store, shard)) for shard in range(16))


def listed(store: Store) -> list[dict]:
    return data(invoke(store, "deadletters", "list", "--json"))


# -- list -------------------------------------------------------------------------------


def test_list_shows_each_dead_letter_with_its_thread_reason_time_and_size(store: Store):
    thread = f"cli-{uuid.uuid4()}"
    (entry_id,) = bogus_dead_letters(store, 4)
    good_dead_letter(store, thread)
    good, bad = listed(store)
    assert set(good) == {
        "id", "shard", "stream", "entry_id", "kind", "thread_id", "reason", "at", "size"
    }  # fmt: skip
    assert (good["kind"], good["thread_id"], good["reason"]) == (
        "checkpoint",
        thread,
        "rejected by a test",
    )
    assert (bad["kind"], bad["thread_id"], bad["shard"]) == ("undecodable", None, 4)
    assert (bad["entry_id"], bad["stream"]) == (entry_id, outbox_key(store, 4))
    assert bad["size"] == sum(len(k) + len(v) for k, v in BOGUS.items())
    assert bad["at"] <= good["at"]

    text = invoke(store, "deadletters", "list")
    assert text.exit_code == 0, text.output
    for word in (bad["id"], good["id"], thread, "undecodable", "2 of 2 dead letters"):
        assert word in text.stdout
    assert [
        row["id"] for row in data(invoke(store, "deadletters", "list", "--limit", "1", "--json"))
    ] == [good["id"]]


def test_list_with_no_dead_letters_says_so(store: Store):
    result = invoke(store, "deadletters", "list")
    assert result.exit_code == 0 and "no dead letters" in result.stdout
    assert listed(store) == []


# -- replay -----------------------------------------------------------------------------


def test_replay_one_puts_its_entry_back_on_the_outbox_with_identical_fields(store: Store):
    bogus_dead_letters(store, 2, 9)
    first, second = listed(store)
    result = invoke(store, "deadletters", "replay", first["id"], "--json")
    report = data(result)
    (row,) = report["replayed"]
    with client(store) as raw:
        outbox = raw.xrange(outbox_key(store, first["shard"]))
    assert [(i.decode(), list(f.items())) for i, f in outbox] == [
        (row["entry_id"], list(BOGUS.items()))
    ]
    assert [letter["id"] for letter in listed(store)] == [second["id"]]
    again = invoke(store, "deadletters", "replay", first["id"])
    assert again.exit_code == 1 and f"no dead letter {first['id']!r}" in again.stderr


def test_replay_all_after_a_fix_brings_a_good_record_to_postgres(store: Store):
    thread = f"fix-{uuid.uuid4()}"
    good_dead_letter(store, thread)
    assert asyncio.run(durable_ids(store.postgres_url, thread)) == []
    result = invoke(store, "deadletters", "replay", "--all")
    assert result.exit_code == 0, result.output
    assert "1 replayed, 0 kept" in result.stdout
    flushed = invoke(store, "flush")
    assert flushed.exit_code == 0, flushed.output
    assert len(asyncio.run(durable_ids(store.postgres_url, thread))) == 1
    assert listed(store) == []


def test_replay_needs_exactly_one_of_an_id_or_all(store: Store):
    assert invoke(store, "deadletters", "replay").exit_code == 2
    assert invoke(store, "deadletters", "replay", "1-0", "--all").exit_code == 2
    bad = invoke(store, "deadletters", "replay", "not-an-id")
    assert bad.exit_code == 1 and "not a dead letter id" in bad.stderr


# -- purge ------------------------------------------------------------------------------


def test_purge_asks_first_and_a_no_keeps_the_dead_letters(store: Store):
    bogus_dead_letters(store, 1, 7)
    first, second = listed(store)
    refused = invoke(store, "deadletters", "purge", first["id"], input="n\n")
    assert refused.exit_code == 1 and "not in PostgreSQL" in refused.output
    assert f"Purge dead letter {first['id']}" in refused.output
    refused_all = invoke(store, "deadletters", "purge", "--all", input="n\n")
    assert refused_all.exit_code == 1 and "Purge all 2 dead letters" in refused_all.output
    assert dead_count(store) == 2

    accepted = invoke(store, "deadletters", "purge", first["id"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "purged 1 dead letters" in accepted.stdout
    assert [letter["id"] for letter in listed(store)] == [second["id"]]


def test_purge_with_yes_does_not_ask(store: Store):
    bogus_dead_letters(store, 0, 3, 3)
    first = listed(store)[0]
    one = invoke(store, "deadletters", "purge", first["id"], "--yes")
    assert one.exit_code == 0 and "Purge" not in one.output
    result = data(invoke(store, "deadletters", "purge", "--all", "--yes", "--json"))
    assert result == {"purged": 2} and dead_count(store) == 0


def test_a_bare_stream_id_two_shards_share_needs_its_shard(store: Store):
    with client(store) as raw:
        for shard in (3, 8):
            fields = {"id": "1-0", "stream": outbox_key(store, shard), "reason": "x", "at": "5"}
            raw.xadd(dead_key(store, shard), {**fields, **BOGUS}, id="5-0")
    ambiguous = invoke(store, "deadletters", "purge", "5-0", "--yes")
    assert ambiguous.exit_code == 1 and "is in shards 3, 8: give <shard>:5-0" in ambiguous.stderr
    assert invoke(store, "deadletters", "purge", "5-0", "--shard", "8", "--yes").exit_code == 0
    assert [letter["id"] for letter in listed(store)] == ["3:5-0"]
    assert invoke(store, "deadletters", "purge", "3:5-0", "--shard", "8").exit_code == 1


# -- status -----------------------------------------------------------------------------


def test_status_warns_when_a_shard_nears_the_dead_letter_cap(store: Store):
    bogus_dead_letters(store, 6)
    quiet = data(invoke(store, "status", "--json"))
    assert quiet["outbox"]["dead_letters"] == 1
    assert quiet["outbox"]["dead_letter_cap"] == DEAD_LETTER_CAP
    assert any("`dualsaver deadletters list`" in w for w in quiet["warnings"])
    assert not any("of the cap" in w for w in quiet["warnings"])

    near = int(DEAD_LETTER_CAP * 0.8)
    with client(store) as raw, raw.pipeline(transaction=False) as pipe:
        for n in range(near - 1):
            pipe.xadd(dead_key(store, 6), {"id": f"1-{n}", "stream": "s", "reason": "x", "at": "1"})
        pipe.execute()
    report = data(invoke(store, "status", "--json"))
    assert any(
        f"shard 6's dead-letter stream is at 80% of the cap ({near:,} of" in w
        for w in report["warnings"]
    )
    text = invoke(store, "status")
    assert "warning: shard 6's dead-letter stream is at 80% of the cap" in text.stdout
