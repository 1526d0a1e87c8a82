"""Retention in the chain: what PostgreSQL's sweep removes, the hot tier loses too.

``durable.retention`` decides on PostgreSQL's rows (every durable checkpoint is there)
and calls this ``HotSide`` after each transaction:

- pruned checkpoints (``keep_last``, ``max_age``, an idle thread's ``keep_latest``)
  leave the hot copy by the same ids (``REMOVE``: their writes and the blobs no
  remaining checkpoint uses go too). So Redis never holds a checkpoint PostgreSQL has
  removed; checkpoints not yet flushed are newer than every removed one and stay. The
  rules are never applied to Redis on its own: it holds a recent part of each thread
  (its ``ttl`` drops whole idle threads), and PostgreSQL's view is what counts.
- an idle thread is deleted through the chain's tombstone, as ``adelete_thread`` does,
  but in one script that first checks Redis (``RETIRE``): a thread with writes still
  queued, or whose latest checkpoint write in Redis (its registry score) is newer than
  the idle cutoff, is left alone. Otherwise the tombstone is queued and the hot copy
  deleted atomically, then PostgreSQL deletes up to the tombstone's position: a write
  queued after it is a new incarnation and stays, one queued before is refused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langgraph_dualsaver.chain.outbox import Outbox, OutboxKey, position, position_ms
from langgraph_dualsaver.errors import StoreUnavailableError
from langgraph_dualsaver.hot.keys import cp_field, text, utf8
from langgraph_dualsaver.hot.scripts import PENDING_LUA, REMOVE

if TYPE_CHECKING:
    from langgraph_dualsaver.durable.saver import PostgresDurableSaver
    from langgraph_dualsaver.hot.saver import RedisHotSaver

__all__ = ["RETIRE_LUA", "ChainHotSide"]

RETIRE_LUA = PENDING_LUA + r"""
-- KEYS: meta, cp, idx, blobs, writes, the shard's outbox, the shard's registry.
-- ARGV: thread_id, idle cutoff (epoch s), entry_id, tag.
-- {'busy'} if the thread has writes queued or a checkpoint written after the cutoff;
-- else XADD a tombstone at entry_id (signed by tag), delete the hot copy and its
-- registration: {'ok', id}. An entry_id at or below the stream's last: {'retry', last}.
local owner = redis.call('HGET', KEYS[1], 'thread_id')
if owner and owner ~= ARGV[1] then
  return redis.error_reply('DUALSAVER these keys belong to another thread_id')
end
if owner then
  if tonumber(redis.call('HGET', KEYS[1], 'pending') or '0') > 0 then return {'busy'} end
end
local score = redis.call('ZSCORE', KEYS[7], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then return {'busy'} end
local id, last = queue_tombstone(KEYS[6], ARGV[3], ARGV[1], ARGV[4])
if not id then return {'retry', last} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[7], ARGV[1])
return {'ok', id}
"""
_ROUNDS = 10
"""Attempts to place the tombstone past the stream's last id (each moves later)."""


class ChainHotSide:
    """``durable.retention.HotSide`` for ``DualSaver``: keeps Redis and the outbox in
    step with what retention removes from PostgreSQL."""

    def __init__(self, hot: RedisHotSaver, durable: PostgresDurableSaver, outbox: Outbox) -> None:
        self.hot = hot
        self.durable = durable
        self.outbox = outbox
        self.busy = 0
        """Idle threads left alone because Redis showed them in use."""

    async def removed(self, thread_id: str, removed: Mapping[str, Sequence[str]]) -> None:
        fields = [cp_field(ns, i) for ns, ids in sorted(removed.items()) for i in ids]
        if fields:
            keys = self.hot.thread_keys(thread_id).data
            await self.hot.conn.eval(REMOVE, keys, [utf8(thread_id), *fields])

    async def delete(self, thread_id: str, idle_cutoff_s: float) -> bool:
        # The chain's key: configured (then the hot tier has it), else PostgreSQL's.
        key = self.hot.outbox_key or OutboxKey(await self.durable.aoutbox_key())
        keys = self.hot.thread_keys(thread_id).all
        floor = 0
        for _ in range(_ROUNDS):
            entry_id = f"{max(int(time.time() * 1000), floor)}-0"
            args: list[Any] = [
                utf8(thread_id), repr(idle_cutoff_s), entry_id,
                key.tombstone_tag(entry_id, thread_id),
            ]  # fmt: skip
            reply = await self._retire(keys, args)
            if reply[0] == b"busy":
                self.busy += 1
                return False
            if reply[0] == b"retry":
                floor = position_ms(position(reply[1])) + 1
                continue
            entry_id = text(reply[1])
            await self.durable.adelete_thread(thread_id, tombstone_seq=position(entry_id))
            await self.outbox.discard([(thread_id, entry_id)])
            return True
        raise StoreUnavailableError(f"could not queue a tombstone for thread {thread_id!r}")

    async def _retire(self, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        client = await self.hot.aclient()
        with self.hot.conn.errors():
            reply = await client.eval(RETIRE_LUA, len(keys), *keys, *args)
        return list(reply)
