"""The hot tier's Lua scripts, one named constant each, loaded once by ``asetup()``.

Every thread script takes the thread's keys in ``hot.keys.ThreadKeys`` order
(``KEYS[1..5]`` = meta, cp, idx, blobs, writes; ``KEYS[6]`` = the shard's outbox;
``KEYS[7]`` = the shard's registry) and
the thread_id as ``ARGV[1]``, which must match the one stored in meta (the keys are
named by its digest). They use only what plain Redis >= 6.2 and Valkey >= 7.2 ship:
``cmsgpack`` reads stored checkpoints (``hot.keys.encode_stored_checkpoint``).

Consistency: every write sets the same expiry on all five keys in the same script, so
they expire together; meta's ``c``/``b``/``w`` flags say which keys must exist, so a
reader that finds one evicted reports the thread ``partial`` instead of half of it.

Pending writes: one ZSET member per ``(checkpoint, task_id, idx)`` (``hot.keys`` module
docstring), so storing a write is O(log n) whatever the checkpoint already holds, and
one checkpoint's writes are one ``ZRANGE BYLEX``. The scripts derive each member's key
from the encoded write itself (``cmsgpack`` cannot read msgpack ``bin``, so ``skip``
reads element headers only). A writes HASH of the old layout (cp field -> the encoded
writes, concatenated) is rewritten as the ZSET by the first script that touches it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph_dualsaver.errors import StoreUnavailableError
from langgraph_dualsaver.hot.keys import (
    blob_field,
    cp_field,
    encode_blob,
    encode_stored_checkpoint,
    encode_write,
    latest_range,
    text,
    utf8,
)
from langgraph_dualsaver.records import CheckpointRecord, WritesRecord
from langgraph_dualsaver.runs import Claim

__all__ = [
    "ACK",
    "ALL_SCRIPTS",
    "CHAIN",
    "DELETE",
    "DISCARD",
    "DROP",
    "DUMP",
    "EVICT",
    "FORGET",
    "LEASE",
    "LOAD",
    "PENDING_LUA",
    "REMOVE",
    "STORE",
    "Script",
    "store_claim_args",
    "store_item_args",
    "stored_entry_ids",
]


@dataclass(frozen=True)
class Script:
    name: str
    body: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.body.encode()).hexdigest())

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue an EVALSHA on a pipeline. (Through ``execute_command``: redis-py's
        cluster pipeline blocks its ``evalsha`` method but routes the command by its
        first key like any other.)"""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


PENDING_LUA = r"""
-- Whether stream id a >= stream id b ('<ms>-<seq>'; both fit a double exactly).
local function id_ge(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then return ams > bms end
  return tonumber(aseq) >= tonumber(bseq)
end

-- Whether outbox entry `id` belongs to the thread's live incarnation (queued since
-- its keys were last created), so acknowledging it may lower its pending count.
local function ours(meta_key, thread_id, id)
  local m = redis.call('HMGET', meta_key, 'thread_id', 'since')
  return m[1] == thread_id and m[2] and id_ge(id, m[2])
end

-- One expiry for a thread's five keys, KEYS[first] (its meta) and the four after it:
-- ttl_ms, or none when ttl_ms <= 0.
local function expire_thread(first, ttl_ms)
  for i = first, first + 4 do
    if ttl_ms > 0 then redis.call('PEXPIRE', KEYS[i], ttl_ms)
    else redis.call('PERSIST', KEYS[i]) end
  end
end

-- n of the thread's records stopped being pending (durable, or given up): lower the
-- count in its meta, KEYS[first]; at zero its five keys get ttl_ms together.
-- Returns the count left.
local function release(first, n, ttl_ms)
  local pending = redis.call('HINCRBY', KEYS[first], 'pending', -n)
  if pending > 0 then return pending end
  if pending < 0 then redis.call('HSET', KEYS[first], 'pending', '0') end
  expire_thread(first, ttl_ms)
  return 0
end

-- XADD a thread's tombstone (field 'd' = thread_id, 'm' = tag, which signs entry_id) to
-- `stream` at exactly entry_id. Returns its id; or nil and the stream's last id when
-- entry_id is at or below it (the caller signs a later one).
local function queue_tombstone(stream, entry_id, thread_id, tag)
  local ok, id = pcall(redis.call, 'XADD', stream, entry_id, 'd', thread_id, 'm', tag)
  if ok then return id end
  local info = redis.call('XINFO', 'STREAM', stream)
  for k = 1, #info, 2 do
    if info[k] == 'last-generated-id' then return nil, info[k + 1] end
  end
  error(id)
end
"""
"""Lua functions on outbox ids, a thread's pending count and its tombstone, for every
script that queues or releases records (the dead letters' and retention's too)."""

_PRELUDE = (
    PENDING_LUA
    + r"""
local META, CP, IDX, BLOBS, WRITES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local EMPTY_BLOB = '\146\165empty\192'

-- One expiry for all of the thread's keys: none while anything is pending.
local function set_expiry(ttl_ms, pending)
  expire_thread(1, pending > 0 and 0 or ttl_ms)
end

-- meta as {thread_id, pending, c, b, w}, or nil when the thread is absent.
local function read_meta(thread_id)
  local m = redis.call('HMGET', META, 'thread_id', 'pending', 'c', 'b', 'w')
  if not m[1] then return nil end
  if m[1] ~= thread_id then
    error({err = 'DUALSAVER these keys belong to another thread_id (sha256 collision)'})
  end
  return m
end

-- Where the msgpack element at byte `at` of `s` ends: headers only, for the types an
-- encoded write holds (keys.encode_write: ints, nil, bool, float, str, bin).
local FIXED = {[0xc0] = 0, [0xc2] = 0, [0xc3] = 0, [0xca] = 4, [0xcb] = 8, [0xcc] = 1,
  [0xcd] = 2, [0xce] = 4, [0xcf] = 8, [0xd0] = 1, [0xd1] = 2, [0xd2] = 4, [0xd3] = 8}
local COUNTED = {[0xc4] = 1, [0xc5] = 2, [0xc6] = 4, [0xd9] = 1, [0xda] = 2, [0xdb] = 4}
local function skip(s, at)
  local b = string.byte(s, at)
  if not b then error({err = 'DUALSAVER truncated encoded write'}) end
  if b <= 0x7f or b >= 0xe0 then return at + 1 end
  if b >= 0xa0 and b <= 0xbf then return at + 1 + b - 0xa0 end
  if FIXED[b] then return at + 1 + FIXED[b] end
  local width = COUNTED[b]
  if not width or at + width > #s then
    error({err = 'DUALSAVER malformed encoded write'})
  end
  local n = 0
  for k = at + 1, at + width do n = n * 256 + string.byte(s, k) end
  return at + 1 + width + n
end

-- The encoded write at byte `at` of `s` (a 6-array: task_id, task_path, idx, channel,
-- type, data): its key (cp field, NUL, its task_id and idx elements as encoded),
-- whether it overwrites (idx < 0: a special channel) and where it ends.
local function write_key(field, s, at)
  if string.byte(s, at) ~= 0x96 then error({err = 'DUALSAVER malformed encoded write'}) end
  local task, path = at + 1, skip(s, at + 1)
  local idx = skip(s, path)
  local stop = skip(s, idx)
  local b = string.byte(s, idx)
  local negative = b >= 0xe0 or (b >= 0xd0 and b <= 0xd3 and string.byte(s, idx + 1) >= 0x80)
  local key = field .. '\0' .. string.sub(s, task, path - 1) .. string.sub(s, idx, stop - 1)
  for _ = 1, 3 do stop = skip(s, stop) end
  return key, negative, stop
end

-- Store encoded writes (one, or several concatenated, in arrival order) by the write
-- rules: per key, a special channel's write replaces, an ordinary one is kept only if
-- there is none. O(log n) each.
local function put_writes(field, s)
  local at = 1
  while at <= #s do
    local key, overwrites, stop = write_key(field, s, at)
    local lo, hi = '[' .. key, '(' .. key .. '\255'
    if overwrites then
      redis.call('ZREMRANGEBYLEX', WRITES, lo, hi)
    end
    if overwrites or redis.call('ZLEXCOUNT', WRITES, lo, hi) == 0 then
      redis.call('ZADD', WRITES, 0, key .. string.sub(s, at, stop - 1))
    end
    at = stop
  end
end

-- The old layout's writes HASH (cp field -> encoded writes, concatenated), rewritten as
-- the ZSET in arrival order, so the rules keep the same winners; the expiry stays.
local function upgrade_writes()
  if redis.call('TYPE', WRITES)['ok'] ~= 'hash' then return end
  local old = redis.call('HGETALL', WRITES)
  local ttl = redis.call('PTTL', WRITES)
  redis.call('DEL', WRITES)
  for k = 1, #old, 2 do put_writes(old[k], old[k + 1]) end
  if ttl > 0 then redis.call('PEXPIRE', WRITES, ttl) end
end

-- One checkpoint's writes: its members of WRITES, in (task_id, idx) key order.
local function writes_of(field)
  return redis.call('ZRANGE', WRITES, '[' .. field .. '\0', '(' .. field .. '\0\255', 'BYLEX')
end

-- Whether every key that meta says exists still does (none was evicted).
local function intact(m)
  if m[3] and (redis.call('EXISTS', CP) == 0 or redis.call('EXISTS', IDX) == 0) then
    return false
  end
  if m[4] and redis.call('EXISTS', BLOBS) == 0 then return false end
  if m[5] and redis.call('EXISTS', WRITES) == 0 then return false end
  return true
end

-- For a reading script: the thread's meta, its writes in the current layout; or nil
-- and what the script then returns, 'absent' or 'partial' (a key was evicted).
local function open_to_read(thread_id)
  local m = read_meta(thread_id)
  if not m then return nil, 'absent' end
  if not intact(m) then return nil, 'partial' end
  upgrade_writes()
  return m
end
"""
)


def _script(name: str, body: str) -> Script:
    return Script(name, _PRELUDE + body)


STORE = _script(
    "store",
    r"""
-- KEYS[7]: the shard's registry; a thread with a checkpoint is (re)scored there at now.
-- ARGV: thread_id, ttl_ms (0 = none), enqueue ('1'/'0'), cap, now (s), n_items,
--   claim (9 args, see below), items...
--   checkpoint: 'c', cp_field, stored, n_blobs, (blob_field, blob)*n_blobs, payload, tag
--   writes:     'w', cp_field, n_writes, write*n_writes, payload, tag
-- With enqueue, each item's payload is XADDed to the outbox (field 'r', its tag 'm')
-- and counted pending; meta's 'since' is the first entry id of this incarnation of the
-- thread. With cap > 0, an outbox already holding cap entries takes nothing: {'full'}.
-- Returns the entry ids.
-- Claim (exclusive runs, runs.Claim; op '' = none): holder, op ('check', 'take',
-- 'release'), lease_ms, parent check ('', 'none' or 'id'), the parent's cp field, head
-- check (the same), the head's cp field, the root namespace's BYLEX max, min.
-- The lease is meta's 'lh' (holder) and 'lu' (until: ms on this server's clock; 0 =
-- let go). A live lease of another holder refuses the write: {'busy', holder}. A
-- newest root checkpoint other than the parent, or (unless the holder has the lease)
-- other than the head, refuses it: {'moved', last holder} ('none': the thread must
-- have none; a thread without any passes 'id'). Nothing is written then. A holder
-- never takes back a lease it let go (a write stored after its run's interrupt), and
-- extends its own only once a tenth of it has run.
local thread_id = ARGV[1]
local enqueue = ARGV[3] == '1'
local cap = tonumber(ARGV[4])
if enqueue and cap > 0 and redis.call('XLEN', KEYS[6]) >= cap then return {'full'} end
local lease_until
if ARGV[8] ~= '' then
  local holder, op = ARGV[7], ARGV[8]
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local l = redis.call('HMGET', META, 'lh', 'lu')
  local lh, lu = l[1], tonumber(l[2] or '0')
  local mine = holder ~= '' and lh == holder
  if lh and lu > now_ms and not mine then return {'busy', lh} end
  local newest = false
  for _, k in ipairs(mine and {10} or {10, 12}) do
    if ARGV[k] ~= '' then
      if newest == false then
        newest = redis.call('ZRANGE', IDX, ARGV[14], ARGV[15], 'BYLEX', 'REV', 'LIMIT', 0, 1)[1]
      end
      if newest and (ARGV[k] == 'none' or newest ~= ARGV[k + 1]) then
        return {'moved', lh or ''}
      end
    end
  end
  local lease_ms = tonumber(ARGV[9])
  -- The holder's own lease is extended once a tenth of it has run (no HSET on most
  -- writes of a busy run).
  if op == 'take' and not (mine and (lu == 0 or lu - now_ms > lease_ms * 0.9)) then
    lease_until = now_ms + lease_ms
  elseif op == 'release' then
    lease_until = 0
  end
end
local m = read_meta(thread_id)
if not m then
  redis.call('DEL', CP, IDX, BLOBS, WRITES) -- leftovers of an evicted meta, if any
  redis.call('HSET', META, 'thread_id', thread_id)
elseif not intact(m) then
  -- Half a thread (a key was evicted) reads as absent, so writing starts it afresh;
  -- what it held is durable or still queued. The pending count stays.
  redis.call('DEL', CP, IDX, BLOBS, WRITES)
  redis.call('HDEL', META, 'c', 'b', 'w')
end
local flags, ids = {}, {}
local i = 16
for _ = 1, tonumber(ARGV[6]) do
  local kind, field = ARGV[i], ARGV[i + 1]
  if kind == 'c' then
    redis.call('HSET', CP, field, ARGV[i + 2])
    redis.call('ZADD', IDX, 0, field)
    flags.c = true
    local n = tonumber(ARGV[i + 3])
    i = i + 4
    for j = i, i + 2 * n - 1, 2 do
      redis.call('HSET', BLOBS, ARGV[j], ARGV[j + 1])
      flags.b = true
    end
    i = i + 2 * n
  else
    local n = tonumber(ARGV[i + 2])
    i = i + 3
    if n > 0 then
      upgrade_writes()
      for j = i, i + n - 1 do put_writes(field, ARGV[j]) end
      flags.w = true
    end
    i = i + n
  end
  if enqueue then
    ids[#ids + 1] = redis.call('XADD', KEYS[6], '*', 'r', ARGV[i], 'm', ARGV[i + 1])
  end
  i = i + 2
end
if #ids > 0 then redis.call('HSETNX', META, 'since', ids[1]) end
if flags.c then redis.call('ZADD', KEYS[7], ARGV[5], thread_id) end
for flag in pairs(flags) do redis.call('HSET', META, flag, '1') end
if lease_until then redis.call('HSET', META, 'lh', ARGV[7], 'lu', lease_until) end
local pending
if enqueue and #ids > 0 then
  pending = redis.call('HINCRBY', META, 'pending', #ids)
else
  pending = tonumber(redis.call('HGET', META, 'pending') or '0')
end
set_expiry(tonumber(ARGV[2]), pending)
return ids
""",
)

LOAD = _script(
    "load",
    r"""
-- ARGV: thread_id, refresh_ttl_ms (0 = no refresh), mode, ...
--   'latest': max, min of the namespace's BYLEX range (the newest checkpoint)
--   'fields': cp fields
-- Returns {'absent'} | {'partial'} | {'ok', items, blobs}: item = {field, stored,
-- its writes' members}; blobs = flat {blob_field, blob, ...}, each blob once.
local m, missing = open_to_read(ARGV[1])
if not m then return {missing} end
local latest = ARGV[3] == 'latest'
local fields
if latest then
  fields = redis.call('ZRANGE', IDX, ARGV[4], ARGV[5], 'BYLEX', 'REV', 'LIMIT', 0, 1)
else
  fields = {}
  for k = 4, #ARGV do fields[#fields + 1] = ARGV[k] end
end
local items, blobs, seen = {}, {}, {}
for _, field in ipairs(fields) do
  local stored = redis.call('HGET', CP, field)
  if stored then
    for _, bf in ipairs(cmsgpack.unpack(stored)[5]) do
      if not seen[bf] then
        seen[bf] = true
        local blob = redis.call('HGET', BLOBS, bf)
        if not blob then return {'partial'} end
        blobs[#blobs + 1] = bf
        blobs[#blobs + 1] = blob
      end
    end
    items[#items + 1] = {field, stored, writes_of(field)}
  elseif latest then
    return {'partial'}
  end
end
local refresh = tonumber(ARGV[2])
if refresh > 0 and tonumber(m[2] or '0') <= 0 then set_expiry(refresh, 0) end
return {'ok', items, blobs}
""",
)

CHAIN = _script(
    "chain",
    r"""
-- The parent chain for get_delta_channel_history, in one call for up to max_steps
-- ancestors.
-- ARGV: thread_id, ns_prefix, max_steps, mode, checkpoint_id, channels...
--   mode 'latest' (checkpoint_id ignored) or 'target': walk from the target's parent;
--   mode 'ancestor': continue a walk at checkpoint_id.
-- Per ancestor: {checkpoint_id, its writes' members, {channel, blob, ...}} with the
-- non-empty blobs of channels still unresolved, which then stop walking.
-- Returns {'absent'} | {'partial'} | {'ok', steps, next checkpoint_id or nil}.
local m, missing = open_to_read(ARGV[1])
if not m then return {missing} end
local P, max_steps, mode, cur = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local remaining, left = {}, 0
for k = 6, #ARGV do
  if not remaining[ARGV[k]] then
    remaining[ARGV[k]] = true
    left = left + 1
  end
end
if mode ~= 'ancestor' then
  local field = P .. cur
  if mode == 'latest' then
    local found = redis.call('ZRANGE', IDX, '(' .. P .. '\255', '[' .. P, 'BYLEX', 'REV',
      'LIMIT', 0, 1)
    if #found == 0 then return {'ok', {}, false} end
    field = found[1]
  end
  local stored = redis.call('HGET', CP, field)
  if not stored then return {'ok', {}, false} end
  cur = cmsgpack.unpack(stored)[3]
end
local steps = {}
while cur ~= '' and left > 0 do
  if #steps >= max_steps then return {'ok', steps, cur} end
  local field = P .. cur
  local stored = redis.call('HGET', CP, field)
  if not stored then break end
  local rec = cmsgpack.unpack(stored)
  local seeds = {}
  for k, ch in ipairs(rec[4]) do
    if remaining[ch] then
      local blob = redis.call('HGET', BLOBS, rec[5][k])
      if not blob then return {'partial'} end
      if blob ~= EMPTY_BLOB then
        seeds[#seeds + 1] = ch
        seeds[#seeds + 1] = blob
      end
    end
  end
  steps[#steps + 1] = {cur, writes_of(field), seeds}
  for k = 1, #seeds, 2 do
    remaining[seeds[k]] = nil
    left = left - 1
  end
  cur = rec[3]
end
return {'ok', steps, false}
""",
)

DELETE = _script(
    "delete",
    r"""
-- ARGV: thread_id, enqueue, entry_id, tag. Deletes the thread (and its registration in
-- KEYS[7]); with enqueue, first XADDs
-- a tombstone (field 'd' = thread_id, 'm' = tag) at exactly entry_id, whose tag signs
-- that id, and returns it. An entry_id at or below the stream's last id deletes
-- nothing and returns {'retry', last id}: the caller signs a later one.
read_meta(ARGV[1])
if ARGV[2] == '1' then
  local id, last = queue_tombstone(KEYS[6], ARGV[3], ARGV[1], ARGV[4])
  if not id then return {'retry', last} end
  redis.call('DEL', META, CP, IDX, BLOBS, WRITES)
  redis.call('ZREM', KEYS[7], ARGV[1])
  return id
end
redis.call('DEL', META, CP, IDX, BLOBS, WRITES)
redis.call('ZREM', KEYS[7], ARGV[1])
return false
""",
)

REMOVE = _script(
    "remove",
    r"""
-- ARGV: thread_id, cp fields... Deletes those checkpoints and their writes, then the
-- blobs no remaining checkpoint references. Returns how many checkpoints went.
local m = read_meta(ARGV[1])
if not m then return 0 end
upgrade_writes()
local removed = 0
for k = 2, #ARGV do
  removed = removed + redis.call('HDEL', CP, ARGV[k])
  redis.call('ZREM', IDX, ARGV[k])
  redis.call('ZREMRANGEBYLEX', WRITES, '[' .. ARGV[k] .. '\0', '(' .. ARGV[k] .. '\0\255')
end
if removed > 0 then
  local keep = {}
  for _, stored in ipairs(redis.call('HVALS', CP)) do
    for _, bf in ipairs(cmsgpack.unpack(stored)[5]) do keep[bf] = true end
  end
  local drop = {}
  for _, bf in ipairs(redis.call('HKEYS', BLOBS)) do
    if not keep[bf] then drop[#drop + 1] = bf end
  end
  for start = 1, #drop, 1000 do
    redis.call('HDEL', BLOBS, unpack(drop, start, math.min(start + 999, #drop)))
  end
  for flag, key in pairs({c = CP, b = BLOBS, w = WRITES}) do
    if redis.call('EXISTS', key) == 0 then redis.call('HDEL', META, flag) end
  end
end
return removed
""",
)

DISCARD = _script(
    "discard",
    r"""
-- ARGV: thread_id, entry_id, ttl_ms, group ('' = none). The caller committed the
-- entry's record itself (write-through): remove the entry from the outbox and, if it
-- was still there (no flusher took it), count it durable: pending -= 1, and at zero
-- the thread's keys get the ttl (together), as ACK does.
-- Returns the pending count left, or -1 when the entry or the thread is gone.
if ARGV[4] ~= '' then redis.call('XACK', KEYS[6], ARGV[4], ARGV[2]) end
if redis.call('XDEL', KEYS[6], ARGV[2]) == 0 or not ours(META, ARGV[1], ARGV[2]) then
  return -1
end
return release(1, 1, tonumber(ARGV[3]))
""",
)

EVICT = _script(
    "evict",
    r"""
-- ARGV: thread_id. Drops the thread's hot copy; no tombstone (it stays in PostgreSQL).
-- A thread with records still queued for PostgreSQL is kept: dropping it would hide
-- acknowledged writes until the flush. Returns 0 then.
read_meta(ARGV[1])
if tonumber(redis.call('HGET', META, 'pending') or '0') > 0 then return 0 end
return redis.call('DEL', META, CP, IDX, BLOBS, WRITES)
""",
)

DROP = _script(
    "drop",
    r"""
-- ARGV: thread_id, position ('<ms>-<seq>'). The thread was deleted while Redis was down,
-- at that position: drop its hot copy, pending entries and all (PostgreSQL refuses
-- them), unless the copy began after it (a thread used again since). No tombstone.
local m = read_meta(ARGV[1])
if not m then return 0 end
local since = redis.call('HGET', META, 'since')
if since and not id_ge(ARGV[2], since) then return 0 end
return redis.call('DEL', META, CP, IDX, BLOBS, WRITES)
""",
)

DUMP = _script(
    "dump",
    r"""
-- ARGV: thread_id. The whole thread, for copy_thread:
-- {'absent'} | {'partial'} | {'ok', cp pairs, blob pairs, writes' members}.
local m, missing = open_to_read(ARGV[1])
if not m then return {missing} end
return {'ok', redis.call('HGETALL', CP), redis.call('HGETALL', BLOBS),
  redis.call('ZRANGE', WRITES, 0, -1)}
""",
)

LEASE = _script(
    "lease",
    r"""
-- ARGV: none. The thread's live lease (exclusive runs, see STORE): {holder, ms left},
-- or {} when there is none or it ran out, by this server's clock.
local l = redis.call('HMGET', META, 'lh', 'lu')
if not l[1] then return {} end
local t = redis.call('TIME')
local left = tonumber(l[2] or '0') - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if left <= 0 then return {} end
return {l[1], left}
""",
)

FORGET = Script(
    "forget",
    r"""
-- KEYS: the registry. ARGV: thread_id, score. Removes the member only if no write has
-- re-scored it since the caller saw it gone.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
""",
)

ACK = Script(
    "ack",
    PENDING_LUA
    + r"""
-- The flusher's acknowledgement for one shard, atomic: for each thread, XACK + XDEL its
-- entries and lower its pending count by the entries this call removed that belong to
-- its live incarnation (one removed elsewhere is counted there; one of a deleted
-- incarnation never counted here); at zero, its five keys get the ttl together.
-- KEYS: the shard's outbox, then five keys per thread (meta, cp, idx, blobs, writes).
-- ARGV: group, ttl_ms (0 = none), n_threads, then per thread: thread_id, n, ids...
local outbox, group, ttl_ms = KEYS[1], ARGV[1], tonumber(ARGV[2])
local a = 4
for t = 0, tonumber(ARGV[3]) - 1 do
  local first = 2 + t * 5
  local thread_id, n = ARGV[a], tonumber(ARGV[a + 1])
  local removed = 0
  for k = a + 2, a + 1 + n do
    redis.call('XACK', outbox, group, ARGV[k])
    if redis.call('XDEL', outbox, ARGV[k]) == 1 and ours(KEYS[first], thread_id, ARGV[k]) then
      removed = removed + 1
    end
  end
  a = a + 2 + n
  if removed > 0 then release(first, removed, ttl_ms) end
end
return 1
""",
)

ALL_SCRIPTS: tuple[Script, ...] = (
    STORE, LOAD, CHAIN, DELETE, REMOVE, DISCARD, EVICT, DROP, DUMP, FORGET,
    ACK, LEASE,
)  # fmt: skip


def store_item_args(
    record: CheckpointRecord | WritesRecord, payload: bytes, tag: bytes = b""
) -> list[bytes | int]:
    """A record as one item of STORE's arguments; ``payload`` is its outbox entry (or b"")
    and ``tag`` the entry's authentication tag."""
    cp = cp_field(record.checkpoint_ns, record.checkpoint_id)
    if isinstance(record, CheckpointRecord):
        args: list[bytes | int] = [
            b"c",
            cp,
            encode_stored_checkpoint(record),
            len(record.blobs),
        ]
        for blob in record.blobs:
            args += [
                blob_field(record.checkpoint_ns, blob.channel, blob.version),
                encode_blob(blob),
            ]
    else:
        args = [b"w", cp, len(record.writes), *(encode_write(w) for w in record.writes)]
    args += [payload, tag]
    return args


_NO_CLAIM: list[bytes | int] = [b"", b"", 0, b"", b"", b"", b"", b"", b""]
_ROOT_RANGE: list[bytes | int] = list(latest_range(""))


def _expected(check: bool, checkpoint_id: str | None) -> list[bytes | int]:
    if not check:
        return [b"", b""]
    if checkpoint_id is None:
        return [b"none", b""]
    return [b"id", cp_field("", checkpoint_id)]


def store_claim_args(claim: Claim | None) -> list[bytes | int]:
    """A write's claim (``runs.Claim``) as STORE's nine claim arguments."""
    if claim is None:
        return _NO_CLAIM
    return [
        utf8(claim.holder),
        claim.op.encode(),
        claim.lease_ms,
        *_expected(claim.check_parent, claim.parent),
        *_expected(claim.check_head, claim.head),
        *_ROOT_RANGE,
    ]


_STREAM_ID = re.compile(rb"\d+-\d+")


def stored_entry_ids(reply: Any, queued: int, where: str) -> list[str]:
    """STORE's reply, which must be one outbox entry id per queued record (none when
    nothing was queued): any other reply proves no write, so it is not taken for one
    (``StoreUnavailableError`` naming the server, ``where``)."""
    if (
        isinstance(reply, list)
        and len(reply) == queued
        and all(isinstance(i, bytes) and _STREAM_ID.fullmatch(i) for i in reply)
    ):
        return [text(i) for i in reply]
    raise StoreUnavailableError(
        f"redis at {where} answered a write with {reply!r:.200} instead of "
        f"{queued} outbox entry id(s); the write is not taken as done"
    )
