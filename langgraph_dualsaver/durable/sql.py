"""Every SQL statement of the PostgreSQL tier, as named constants, its migrations, and
the pure functions that lay out their parameters.

Tables are named ``dualsaver_*`` so they never clash with the official saver's tables
in the same database. Ids are ``COLLATE "C"``: bytewise order, which is Python's order
for ``str`` (the Redis tier and the chain sort the same way) and cheaper to compare.

Every statement is parameterized; values never become SQL text. The only composed
statements are ``list_sql``, which joins fixed predicates chosen by which arguments are
present, and ``create_schema_sql``, whose one piece of text is a schema name checked by
``schema_name``.

A saver with a ``schema`` runs every statement here unchanged: its connections'
``search_path`` is that schema alone, so tables, the index and ``dualsaver_write_batch``
are created and found there (and never in ``public``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from langgraph_dualsaver.errors import ConfigurationError, InvalidMetadataError
from langgraph_dualsaver.records import (
    CheckpointRecord,
    WritesRecord,
    record_versions,
    version_key,
)

__all__ = [
    "ADVISORY_LOCK_SETUP",
    "ADVISORY_UNLOCK_SETUP",
    "AUDIT",
    "CLAIM_SETTING",
    "COPY_THREAD",
    "CURRENT_MIGRATION",
    "DELETE_FOR_RUNS",
    "DELETE_RUN_WRITES",
    "DELETE_THREAD",
    "DELETE_THREAD_UPTO",
    "DELTA_HISTORY_BY_ID",
    "DELTA_HISTORY_LATEST",
    "DELTA_KEEP_CHAIN",
    "GC_BLOBS",
    "GET_BY_ID",
    "GET_LATEST",
    "GET_SETTING",
    "INSERT_RECORDS",
    "LEASE",
    "LOCK_THREADS",
    "MIGRATIONS",
    "PARTITIONED_TABLES",
    "PRUNE_CHECKPOINTS",
    "PRUNE_HEADS",
    "PRUNE_PARENTS",
    "PRUNE_WRITES",
    "PUT_SETTING",
    "RECORD_MIGRATION",
    "REMEMBER_DELETED_CHECKPOINTS",
    "RETENTION_CHECKPOINTS",
    "RETENTION_DELETE",
    "RETENTION_DELTA_KEEP",
    "RETENTION_FORGET",
    "RETENTION_LOCK",
    "RETENTION_ORPHANS",
    "RETENTION_THREADS",
    "RETENTION_UNLOCK",
    "RUN_THREADS",
    "SCHEMA_EXISTS",
    "SEARCH_PATH",
    "TABLE_LAYOUT",
    "THREADS",
    "THREAD_INFO",
    "THREAD_TABLES",
    "UPSERT_TOMBSTONE",
    "WRITE_BATCH_GUARDED",
    "WRITE_EXCLUSIVE",
    "batch_params",
    "create_schema_sql",
    "filter_param",
    "list_sql",
    "partition_sql",
    "quoted_schema",
    "schema_name",
    "setup_lock_key",
]

# -- migrations -----------------------------------------------------------------------

MIGRATIONS: list[str] = [
    # 0: the migrations table itself, run on every setup (idempotent).
    """
    CREATE TABLE IF NOT EXISTS dualsaver_migrations (
        v INTEGER PRIMARY KEY,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    # 1: one row per checkpoint; channel values live in dualsaver_blobs.
    # channel_versions repeats the checkpoint's versions (which are inside the msgpack
    # bytes) as JSONB, so the blobs can be joined in SQL: one round trip per read.
    """
    CREATE TABLE IF NOT EXISTS dualsaver_checkpoints (
        thread_id TEXT COLLATE "C" NOT NULL,
        checkpoint_ns TEXT COLLATE "C" NOT NULL DEFAULT '',
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        parent_checkpoint_id TEXT COLLATE "C",
        checkpoint BYTEA NOT NULL,
        channel_versions JSONB NOT NULL DEFAULT '{}',
        metadata JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    )
    """,
    # 2: one row per (thread, namespace, channel, version): an unchanged channel is
    # never written again.
    """
    CREATE TABLE IF NOT EXISTS dualsaver_blobs (
        thread_id TEXT COLLATE "C" NOT NULL,
        checkpoint_ns TEXT COLLATE "C" NOT NULL DEFAULT '',
        channel TEXT COLLATE "C" NOT NULL,
        version TEXT COLLATE "C" NOT NULL,
        type TEXT NOT NULL,
        blob BYTEA,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
    )
    """,
    # 3: pending writes, kept after their step: they are the audit trail.
    """
    CREATE TABLE IF NOT EXISTS dualsaver_writes (
        thread_id TEXT COLLATE "C" NOT NULL,
        checkpoint_ns TEXT COLLATE "C" NOT NULL DEFAULT '',
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        task_id TEXT COLLATE "C" NOT NULL,
        task_path TEXT COLLATE "C" NOT NULL DEFAULT '',
        idx INTEGER NOT NULL,
        channel TEXT COLLATE "C" NOT NULL,
        type TEXT NOT NULL,
        blob BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    )
    """,
    # 4: delete_thread's high-water mark, so a queued flush never resurrects a thread.
    """
    CREATE TABLE IF NOT EXISTS dualsaver_tombstones (
        thread_id TEXT COLLATE "C" PRIMARY KEY,
        deleted_seq BIGINT NOT NULL,
        deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    # 5: delete_for_runs looks checkpoints up by run.
    """
    CREATE INDEX IF NOT EXISTS dualsaver_checkpoints_run_id_idx
    ON dualsaver_checkpoints ((metadata ->> 'run_id'))
    """,
    # 6: the chain's flush in one round trip: lock the batch's threads (sorted, so two
    # batches never deadlock), then insert only rows whose outbox position is past the
    # thread's tombstone. A plpgsql function so the insert runs after the lock with a
    # fresh snapshot, and sees a tombstone committed while it waited.
    """
    CREATE OR REPLACE FUNCTION dualsaver_write_batch(
        lock_threads text[], rec_threads text[], rec_seqs bigint[],
        b_t text[], b_ns text[], b_ch text[], b_v text[], b_ty text[], b_blob bytea[],
        s_t text[], s_ns text[], s_id text[], s_task text[], s_path text[], s_idx int[],
        s_ch text[], s_ty text[], s_blob bytea[],
        p_t text[], p_ns text[], p_id text[], p_task text[], p_path text[], p_idx int[],
        p_ch text[], p_ty text[], p_blob bytea[],
        c_t text[], c_ns text[], c_id text[], c_parent text[], c_cp bytea[],
        c_versions text[], c_meta text[],
        b_seq bigint[], s_seq bigint[], p_seq bigint[], c_seq bigint[]
    ) RETURNS integer LANGUAGE plpgsql AS $fn$
    BEGIN
        PERFORM pg_advisory_xact_lock(k) FROM (
            SELECT DISTINCT hashtextextended(t, 0) AS k FROM unnest(lock_threads) AS t
            ORDER BY k
        ) AS keys;

        IF cardinality(b_t) > 0 THEN
        INSERT INTO dualsaver_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
        SELECT r.t, r.ns, r.ch, r.v, r.ty, r.blob
        FROM unnest(b_t, b_ns, b_ch, b_v, b_ty, b_blob, b_seq) AS r(t, ns, ch, v, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
        ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING;
        END IF;

        IF cardinality(s_t) > 0 THEN
        INSERT INTO dualsaver_writes
            (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
        SELECT r.t, r.ns, r.id, r.task, r.path, r.idx, r.ch, r.ty, r.blob
        FROM unnest(s_t, s_ns, s_id, s_task, s_path, s_idx, s_ch, s_ty, s_blob, s_seq)
            AS r(t, ns, id, task, path, idx, ch, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET task_path = EXCLUDED.task_path, channel = EXCLUDED.channel,
            type = EXCLUDED.type, blob = EXCLUDED.blob
        WHERE (dualsaver_writes.task_path, dualsaver_writes.channel,
               dualsaver_writes.type, dualsaver_writes.blob)
            IS DISTINCT FROM (EXCLUDED.task_path, EXCLUDED.channel, EXCLUDED.type, EXCLUDED.blob);
        END IF;

        IF cardinality(p_t) > 0 THEN
        INSERT INTO dualsaver_writes
            (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
        SELECT r.t, r.ns, r.id, r.task, r.path, r.idx, r.ch, r.ty, r.blob
        FROM unnest(p_t, p_ns, p_id, p_task, p_path, p_idx, p_ch, p_ty, p_blob, p_seq)
            AS r(t, ns, id, task, path, idx, ch, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING;
        END IF;

        IF cardinality(c_t) > 0 THEN
        INSERT INTO dualsaver_checkpoints
            (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint,
             channel_versions, metadata)
        SELECT r.t, r.ns, r.id, r.parent, r.cp, r.versions::jsonb, r.meta::jsonb
        FROM unnest(c_t, c_ns, c_id, c_parent, c_cp, c_versions, c_meta, c_seq)
            AS r(t, ns, id, parent, cp, versions, meta, seq)
        WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE
        SET parent_checkpoint_id = EXCLUDED.parent_checkpoint_id,
            checkpoint = EXCLUDED.checkpoint,
            channel_versions = EXCLUDED.channel_versions,
            metadata = EXCLUDED.metadata
        WHERE (dualsaver_checkpoints.parent_checkpoint_id, dualsaver_checkpoints.checkpoint,
               dualsaver_checkpoints.metadata)
            IS DISTINCT FROM (EXCLUDED.parent_checkpoint_id, EXCLUDED.checkpoint,
                              EXCLUDED.metadata);
        END IF;

        RETURN (SELECT count(*) FROM unnest(rec_threads, rec_seqs) AS r(t, seq)
                WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                                  WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq));
    END
    $fn$
    """,
    # 7: every row remembers the outbox position that wrote it (0 outside the chain),
    # so a tombstone removes only what was written before it, never a later
    # incarnation of the thread; and a table for the installation's own settings
    # (the outbox authentication key, the schema's owning prefix).
    """
    ALTER TABLE dualsaver_checkpoints ADD COLUMN IF NOT EXISTS seq BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE dualsaver_blobs ADD COLUMN IF NOT EXISTS seq BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE dualsaver_writes ADD COLUMN IF NOT EXISTS seq BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE IF NOT EXISTS dualsaver_settings (
        name TEXT COLLATE "C" PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    # 8: the guarded batch keeps each row's outbox position and says which records a
    # tombstone refused (their 1-based positions in the batch), instead of a count the
    # caller cannot act on. A tombstone refuses a record at or before its position;
    # rows written after it (a thread used again) are never its business. The write
    # rules follow outbox order, not arrival order, so entries applied out of order (a
    # reclaimed batch, a second worker) end as Redis has them: an ordinary write's
    # earliest position wins, a special write's and a checkpoint's latest. A pending
    # write for a checkpoint delete_for_runs removed (a rolled-back run whose cancelled
    # task still writes) is dropped: the rollback wins, as a delete does.
    """
    CREATE TABLE IF NOT EXISTS dualsaver_deleted_checkpoints (
        thread_id TEXT COLLATE "C" NOT NULL,
        checkpoint_ns TEXT COLLATE "C" NOT NULL,
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    );
    DROP FUNCTION IF EXISTS dualsaver_write_batch;
    CREATE FUNCTION dualsaver_write_batch(
        lock_threads text[], rec_threads text[], rec_seqs bigint[],
        b_t text[], b_ns text[], b_ch text[], b_v text[], b_ty text[], b_blob bytea[],
        s_t text[], s_ns text[], s_id text[], s_task text[], s_path text[], s_idx int[],
        s_ch text[], s_ty text[], s_blob bytea[],
        p_t text[], p_ns text[], p_id text[], p_task text[], p_path text[], p_idx int[],
        p_ch text[], p_ty text[], p_blob bytea[],
        c_t text[], c_ns text[], c_id text[], c_parent text[], c_cp bytea[],
        c_versions text[], c_meta text[],
        b_seq bigint[], s_seq bigint[], p_seq bigint[], c_seq bigint[]
    ) RETURNS integer[] LANGUAGE plpgsql AS $fn$
    BEGIN
        PERFORM pg_advisory_xact_lock(k) FROM (
            SELECT DISTINCT hashtextextended(t, 0) AS k FROM unnest(lock_threads) AS t
            ORDER BY k
        ) AS keys;

        IF cardinality(b_t) > 0 THEN
        INSERT INTO dualsaver_blobs (thread_id, checkpoint_ns, channel, version, type, blob, seq)
        SELECT r.t, r.ns, r.ch, r.v, r.ty, r.blob, r.seq
        FROM unnest(b_t, b_ns, b_ch, b_v, b_ty, b_blob, b_seq) AS r(t, ns, ch, v, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
        ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING;
        END IF;

        IF cardinality(s_t) > 0 THEN
        INSERT INTO dualsaver_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
                                      task_path, idx, channel, type, blob, seq)
        SELECT r.t, r.ns, r.id, r.task, r.path, r.idx, r.ch, r.ty, r.blob, r.seq
        FROM unnest(s_t, s_ns, s_id, s_task, s_path, s_idx, s_ch, s_ty, s_blob, s_seq)
            AS r(t, ns, id, task, path, idx, ch, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
          AND NOT EXISTS (SELECT 1 FROM dualsaver_deleted_checkpoints d
                          WHERE d.thread_id = r.t AND d.checkpoint_ns = r.ns
                            AND d.checkpoint_id = r.id)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET task_path = EXCLUDED.task_path, channel = EXCLUDED.channel,
            type = EXCLUDED.type, blob = EXCLUDED.blob,
            seq = GREATEST(dualsaver_writes.seq, EXCLUDED.seq)
        WHERE dualsaver_writes.seq <= EXCLUDED.seq
          AND (dualsaver_writes.task_path, dualsaver_writes.channel,
               dualsaver_writes.type, dualsaver_writes.blob)
            IS DISTINCT FROM (EXCLUDED.task_path, EXCLUDED.channel, EXCLUDED.type, EXCLUDED.blob);
        END IF;

        IF cardinality(p_t) > 0 THEN
        INSERT INTO dualsaver_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
                                      task_path, idx, channel, type, blob, seq)
        SELECT r.t, r.ns, r.id, r.task, r.path, r.idx, r.ch, r.ty, r.blob, r.seq
        FROM unnest(p_t, p_ns, p_id, p_task, p_path, p_idx, p_ch, p_ty, p_blob, p_seq)
            AS r(t, ns, id, task, path, idx, ch, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
          AND NOT EXISTS (SELECT 1 FROM dualsaver_deleted_checkpoints d
                          WHERE d.thread_id = r.t AND d.checkpoint_ns = r.ns
                            AND d.checkpoint_id = r.id)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET task_path = EXCLUDED.task_path, channel = EXCLUDED.channel,
            type = EXCLUDED.type, blob = EXCLUDED.blob, seq = EXCLUDED.seq
        WHERE dualsaver_writes.seq > EXCLUDED.seq;
        END IF;

        IF cardinality(c_t) > 0 THEN
        INSERT INTO dualsaver_checkpoints
            (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint,
             channel_versions, metadata, seq)
        SELECT r.t, r.ns, r.id, r.parent, r.cp, r.versions::jsonb, r.meta::jsonb, r.seq
        FROM unnest(c_t, c_ns, c_id, c_parent, c_cp, c_versions, c_meta, c_seq)
            AS r(t, ns, id, parent, cp, versions, meta, seq)
        WHERE NOT EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE
        SET parent_checkpoint_id = EXCLUDED.parent_checkpoint_id,
            checkpoint = EXCLUDED.checkpoint,
            channel_versions = EXCLUDED.channel_versions,
            metadata = EXCLUDED.metadata,
            seq = GREATEST(dualsaver_checkpoints.seq, EXCLUDED.seq)
        WHERE dualsaver_checkpoints.seq <= EXCLUDED.seq
          AND (dualsaver_checkpoints.parent_checkpoint_id, dualsaver_checkpoints.checkpoint,
               dualsaver_checkpoints.metadata)
            IS DISTINCT FROM (EXCLUDED.parent_checkpoint_id, EXCLUDED.checkpoint,
                              EXCLUDED.metadata);
        END IF;

        RETURN ARRAY(
            SELECT r.n::integer FROM unnest(rec_threads, rec_seqs) WITH ORDINALITY AS r(t, seq, n)
            WHERE EXISTS (SELECT 1 FROM dualsaver_tombstones x
                          WHERE x.thread_id = r.t AND x.deleted_seq >= r.seq)
            ORDER BY r.n);
    END
    $fn$
    """,
    # 9: the same rules, but the batch reads its threads' tombstones and deleted
    # checkpoints first, after taking the locks, into arrays the inserts check: the
    # inserts scan no table. Each lookup is a LATERAL subquery per thread (OFFSET 0
    # keeps it one), so it runs on its thread's partition only (see durable/layout.py);
    # a join against the tables may scan every partition (a hash anti-join, which
    # generic plans pick).
    """
    CREATE OR REPLACE FUNCTION dualsaver_write_batch(
        lock_threads text[], rec_threads text[], rec_seqs bigint[],
        b_t text[], b_ns text[], b_ch text[], b_v text[], b_ty text[], b_blob bytea[],
        s_t text[], s_ns text[], s_id text[], s_task text[], s_path text[], s_idx int[],
        s_ch text[], s_ty text[], s_blob bytea[],
        p_t text[], p_ns text[], p_id text[], p_task text[], p_path text[], p_idx int[],
        p_ch text[], p_ty text[], p_blob bytea[],
        c_t text[], c_ns text[], c_id text[], c_parent text[], c_cp bytea[],
        c_versions text[], c_meta text[],
        b_seq bigint[], s_seq bigint[], p_seq bigint[], c_seq bigint[]
    ) RETURNS integer[] LANGUAGE plpgsql AS $fn$
    DECLARE
        tomb_t text[] := '{}';
        tomb_s bigint[] := '{}';
        gone_t text[] := '{}';
        gone_ns text[] := '{}';
        gone_id text[] := '{}';
    BEGIN
        PERFORM pg_advisory_xact_lock(k) FROM (
            SELECT DISTINCT hashtextextended(t, 0) AS k FROM unnest(lock_threads) AS t
            ORDER BY k
        ) AS keys;

        SELECT coalesce(array_agg(x.thread_id), '{}'), coalesce(array_agg(x.deleted_seq), '{}')
        INTO tomb_t, tomb_s
        FROM (SELECT DISTINCT t FROM unnest(lock_threads) AS t) AS l
        CROSS JOIN LATERAL (
            SELECT x.thread_id, x.deleted_seq FROM dualsaver_tombstones x
            WHERE x.thread_id = l.t OFFSET 0
        ) AS x;

        IF cardinality(s_t) + cardinality(p_t) > 0 THEN
        SELECT coalesce(array_agg(d.thread_id), '{}'), coalesce(array_agg(d.checkpoint_ns), '{}'),
               coalesce(array_agg(d.checkpoint_id), '{}')
        INTO gone_t, gone_ns, gone_id
        FROM (SELECT DISTINCT w.t, w.id FROM unnest(s_t || p_t, s_id || p_id) AS w(t, id)) AS w
        CROSS JOIN LATERAL (
            SELECT d.thread_id, d.checkpoint_ns, d.checkpoint_id
            FROM dualsaver_deleted_checkpoints d
            WHERE d.thread_id = w.t AND d.checkpoint_id = w.id OFFSET 0
        ) AS d;
        END IF;

        IF cardinality(b_t) > 0 THEN
        INSERT INTO dualsaver_blobs (thread_id, checkpoint_ns, channel, version, type, blob, seq)
        SELECT r.t, r.ns, r.ch, r.v, r.ty, r.blob, r.seq
        FROM unnest(b_t, b_ns, b_ch, b_v, b_ty, b_blob, b_seq) AS r(t, ns, ch, v, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM unnest(tomb_t, tomb_s) AS x(t, s)
                          WHERE x.t = r.t AND x.s >= r.seq)
        ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING;
        END IF;

        IF cardinality(s_t) > 0 THEN
        INSERT INTO dualsaver_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
                                      task_path, idx, channel, type, blob, seq)
        SELECT r.t, r.ns, r.id, r.task, r.path, r.idx, r.ch, r.ty, r.blob, r.seq
        FROM unnest(s_t, s_ns, s_id, s_task, s_path, s_idx, s_ch, s_ty, s_blob, s_seq)
            AS r(t, ns, id, task, path, idx, ch, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM unnest(tomb_t, tomb_s) AS x(t, s)
                          WHERE x.t = r.t AND x.s >= r.seq)
          AND NOT EXISTS (SELECT 1 FROM unnest(gone_t, gone_ns, gone_id) AS d(t, ns, id)
                          WHERE d.t = r.t AND d.ns = r.ns AND d.id = r.id)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET task_path = EXCLUDED.task_path, channel = EXCLUDED.channel,
            type = EXCLUDED.type, blob = EXCLUDED.blob,
            seq = GREATEST(dualsaver_writes.seq, EXCLUDED.seq)
        WHERE dualsaver_writes.seq <= EXCLUDED.seq
          AND (dualsaver_writes.task_path, dualsaver_writes.channel,
               dualsaver_writes.type, dualsaver_writes.blob)
            IS DISTINCT FROM (EXCLUDED.task_path, EXCLUDED.channel, EXCLUDED.type, EXCLUDED.blob);
        END IF;

        IF cardinality(p_t) > 0 THEN
        INSERT INTO dualsaver_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
                                      task_path, idx, channel, type, blob, seq)
        SELECT r.t, r.ns, r.id, r.task, r.path, r.idx, r.ch, r.ty, r.blob, r.seq
        FROM unnest(p_t, p_ns, p_id, p_task, p_path, p_idx, p_ch, p_ty, p_blob, p_seq)
            AS r(t, ns, id, task, path, idx, ch, ty, blob, seq)
        WHERE NOT EXISTS (SELECT 1 FROM unnest(tomb_t, tomb_s) AS x(t, s)
                          WHERE x.t = r.t AND x.s >= r.seq)
          AND NOT EXISTS (SELECT 1 FROM unnest(gone_t, gone_ns, gone_id) AS d(t, ns, id)
                          WHERE d.t = r.t AND d.ns = r.ns AND d.id = r.id)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET task_path = EXCLUDED.task_path, channel = EXCLUDED.channel,
            type = EXCLUDED.type, blob = EXCLUDED.blob, seq = EXCLUDED.seq
        WHERE dualsaver_writes.seq > EXCLUDED.seq;
        END IF;

        IF cardinality(c_t) > 0 THEN
        INSERT INTO dualsaver_checkpoints
            (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint,
             channel_versions, metadata, seq)
        SELECT r.t, r.ns, r.id, r.parent, r.cp, r.versions::jsonb, r.meta::jsonb, r.seq
        FROM unnest(c_t, c_ns, c_id, c_parent, c_cp, c_versions, c_meta, c_seq)
            AS r(t, ns, id, parent, cp, versions, meta, seq)
        WHERE NOT EXISTS (SELECT 1 FROM unnest(tomb_t, tomb_s) AS x(t, s)
                          WHERE x.t = r.t AND x.s >= r.seq)
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE
        SET parent_checkpoint_id = EXCLUDED.parent_checkpoint_id,
            checkpoint = EXCLUDED.checkpoint,
            channel_versions = EXCLUDED.channel_versions,
            metadata = EXCLUDED.metadata,
            seq = GREATEST(dualsaver_checkpoints.seq, EXCLUDED.seq)
        WHERE dualsaver_checkpoints.seq <= EXCLUDED.seq
          AND (dualsaver_checkpoints.parent_checkpoint_id, dualsaver_checkpoints.checkpoint,
               dualsaver_checkpoints.metadata)
            IS DISTINCT FROM (EXCLUDED.parent_checkpoint_id, EXCLUDED.checkpoint,
                              EXCLUDED.metadata);
        END IF;

        RETURN ARRAY(
            SELECT r.n::integer FROM unnest(rec_threads, rec_seqs) WITH ORDINALITY AS r(t, seq, n)
            WHERE EXISTS (SELECT 1 FROM unnest(tomb_t, tomb_s) AS x(t, s)
                          WHERE x.t = r.t AND x.s >= r.seq)
            ORDER BY r.n);
    END
    $fn$
    """,
    # 10: exclusive runs (``runs``): a lease per thread, and the check a write by a run
    # makes in its own transaction, before it writes (``WRITE_EXCLUSIVE``). Under the
    # thread's advisory lock: a live lease of another holder refuses it (busy); so does
    # a newest root checkpoint other than the parent (p_check) or, unless the holder has
    # the lease, other than the head the run read (p_head_check) (moved; 'none': the
    # thread must have none; 'id': a thread without any passes). Then the lease is taken
    # (or renewed, once a tenth of it has run) or let go; a holder never takes back a
    # lease it let go (a write stored after its run's interrupt).
    # Times are this server's clock, in ms; lease_until 0: let go.
    """
    CREATE TABLE IF NOT EXISTS dualsaver_leases (
        thread_id TEXT COLLATE "C" PRIMARY KEY,
        holder TEXT NOT NULL,
        lease_until BIGINT NOT NULL
    );
    CREATE OR REPLACE FUNCTION dualsaver_claim(
        p_thread text, p_holder text, p_op text, p_lease_ms bigint, p_check text,
        p_expected text, p_head_check text, p_head text
    ) RETURNS text[] LANGUAGE plpgsql AS $fn$
    DECLARE
        now_ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        held_by text;
        held_until bigint;
        mine boolean;
        newest text;
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_thread, 0));
        SELECT l.holder, l.lease_until INTO held_by, held_until
        FROM dualsaver_leases l WHERE l.thread_id = p_thread;
        mine := p_holder <> '' AND held_by IS NOT DISTINCT FROM p_holder;
        IF held_until > now_ms AND NOT mine THEN
            RETURN ARRAY['busy', held_by];
        END IF;
        IF p_check <> '' OR (p_head_check <> '' AND NOT mine) THEN
            SELECT c.checkpoint_id INTO newest FROM dualsaver_checkpoints c
            WHERE c.thread_id = p_thread AND c.checkpoint_ns = ''
            ORDER BY c.checkpoint_id DESC LIMIT 1;
            IF newest IS NOT NULL AND (
                (p_check <> '' AND (p_check = 'none' OR newest <> p_expected))
                OR (p_head_check <> '' AND NOT mine
                    AND (p_head_check = 'none' OR newest <> p_head))
            ) THEN
                RETURN ARRAY['moved', coalesce(held_by, '')];
            END IF;
        END IF;
        IF p_op = 'take'
           AND NOT (mine AND (held_until = 0 OR held_until - now_ms > p_lease_ms * 0.9)) THEN
            INSERT INTO dualsaver_leases (thread_id, holder, lease_until)
            VALUES (p_thread, p_holder, now_ms + p_lease_ms)
            ON CONFLICT (thread_id) DO UPDATE
            SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until;
        ELSIF p_op = 'release' THEN
            INSERT INTO dualsaver_leases (thread_id, holder, lease_until)
            VALUES (p_thread, p_holder, 0)
            ON CONFLICT (thread_id) DO UPDATE SET holder = EXCLUDED.holder, lease_until = 0;
        END IF;
        RETURN ARRAY['ok'];
    END
    $fn$
    """,
    # 11: reserved (object-storage offload).
    "SELECT 1",
    # 12: retention remembers when it removed a checkpoint, so the remembered ids (which
    # drop a late write to a removed checkpoint) are themselves forgotten after a while.
    """
    ALTER TABLE dualsaver_deleted_checkpoints
        ADD COLUMN IF NOT EXISTS deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
    """,
]
"""Append-only: a migration's position is its version. A dead one stays as ``SELECT 1``
so later numbers never shift."""

# One key per schema for the whole migration run (session lock: held across the
# per-migration transactions, released in ``finally`` or when the session ends).
# $1 is ``setup_lock_key(schema)``.
ADVISORY_LOCK_SETUP = "SELECT pg_advisory_lock(hashtextextended($1, 0))"
ADVISORY_UNLOCK_SETUP = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"
CURRENT_MIGRATION = "SELECT coalesce(max(v), -1) FROM dualsaver_migrations"
RECORD_MIGRATION = "INSERT INTO dualsaver_migrations (v) VALUES ($1) ON CONFLICT (v) DO NOTHING"

# -- partitioned layout -----------------------------------------------------------------

# The thread tables as migrations 1-8 leave them (same columns, order, keys), but
# hash-partitioned by thread_id. ``setup(partitions=N)`` creates them before the
# migrations run, which then find them (IF NOT EXISTS) and go on as usual.
PARTITIONED_TABLES: dict[str, str] = {
    "dualsaver_checkpoints": """
    CREATE TABLE IF NOT EXISTS dualsaver_checkpoints (
        thread_id TEXT COLLATE "C" NOT NULL,
        checkpoint_ns TEXT COLLATE "C" NOT NULL DEFAULT '',
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        parent_checkpoint_id TEXT COLLATE "C",
        checkpoint BYTEA NOT NULL,
        channel_versions JSONB NOT NULL DEFAULT '{}',
        metadata JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        seq BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    ) PARTITION BY HASH (thread_id)
    """,
    "dualsaver_blobs": """
    CREATE TABLE IF NOT EXISTS dualsaver_blobs (
        thread_id TEXT COLLATE "C" NOT NULL,
        checkpoint_ns TEXT COLLATE "C" NOT NULL DEFAULT '',
        channel TEXT COLLATE "C" NOT NULL,
        version TEXT COLLATE "C" NOT NULL,
        type TEXT NOT NULL,
        blob BYTEA,
        seq BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
    ) PARTITION BY HASH (thread_id)
    """,
    "dualsaver_writes": """
    CREATE TABLE IF NOT EXISTS dualsaver_writes (
        thread_id TEXT COLLATE "C" NOT NULL,
        checkpoint_ns TEXT COLLATE "C" NOT NULL DEFAULT '',
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        task_id TEXT COLLATE "C" NOT NULL,
        task_path TEXT COLLATE "C" NOT NULL DEFAULT '',
        idx INTEGER NOT NULL,
        channel TEXT COLLATE "C" NOT NULL,
        type TEXT NOT NULL,
        blob BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        seq BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    ) PARTITION BY HASH (thread_id)
    """,
    "dualsaver_tombstones": """
    CREATE TABLE IF NOT EXISTS dualsaver_tombstones (
        thread_id TEXT COLLATE "C" PRIMARY KEY,
        deleted_seq BIGINT NOT NULL,
        deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
    ) PARTITION BY HASH (thread_id)
    """,
    "dualsaver_deleted_checkpoints": """
    CREATE TABLE IF NOT EXISTS dualsaver_deleted_checkpoints (
        thread_id TEXT COLLATE "C" NOT NULL,
        checkpoint_ns TEXT COLLATE "C" NOT NULL,
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    ) PARTITION BY HASH (thread_id)
    """,
    "dualsaver_leases": """
    CREATE TABLE IF NOT EXISTS dualsaver_leases (
        thread_id TEXT COLLATE "C" PRIMARY KEY,
        holder TEXT NOT NULL,
        lease_until BIGINT NOT NULL
    ) PARTITION BY HASH (thread_id)
    """,
}
THREAD_TABLES: tuple[str, ...] = tuple(PARTITIONED_TABLES)
"""Every table keyed by thread: the ones ``partitions=N`` partitions."""

# Per thread table that exists (found through search_path): 'p' (partitioned) or 'r',
# and its number of partitions.
TABLE_LAYOUT = """
SELECT c.relname AS name, c.relkind::text AS kind,
       (SELECT count(*) FROM pg_inherits AS i WHERE i.inhparent = c.oid) AS partitions
FROM unnest($1::text[]) AS t(name)
JOIN pg_class AS c ON c.oid = to_regclass(t.name)
"""


def partition_sql(table: str, modulus: int, remainder: int) -> str:
    """``CREATE TABLE ... PARTITION OF`` for one hash partition of a thread table (DDL
    takes no parameters: the names are ours, the numbers checked integers)."""
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"{table!r} is not a thread table")
    if type(modulus) is not int or type(remainder) is not int or not 0 <= remainder < modulus:
        raise ValueError(f"bad hash partition {remainder} of {modulus}")
    return (
        f"CREATE TABLE IF NOT EXISTS {table}_p{remainder} PARTITION OF {table} "
        f"FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})"
    )


# -- schemas: one per app ---------------------------------------------------------------

SCHEMA_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)"
SEARCH_PATH = "SELECT current_setting('search_path')"
# A setting is recorded once; the first writer wins and everyone reads the winner.
CLAIM_SETTING = (
    "INSERT INTO dualsaver_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
)
GET_SETTING = "SELECT value FROM dualsaver_settings WHERE name = $1"
PUT_SETTING = """
INSERT INTO dualsaver_settings (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
"""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SETUP_LOCK = "langgraph-dualsaver:setup"


def schema_name(name: object) -> str:
    """``name``, if the saver accepts it as a schema: lower-case ASCII letters, digits
    and ``_``, not starting with a digit or ``pg_``, at most 63 characters. Such a name
    means the same quoted or not, and is safe SQL text once quoted."""
    if (
        not isinstance(name, str)
        or not _SCHEMA_NAME.fullmatch(name)
        or name.startswith("pg_")
        or name == "information_schema"
    ):
        raise ConfigurationError(
            f"schema must be a lower-case PostgreSQL name (a-z, 0-9 and _, not starting "
            f"with a digit or pg_, at most 63 characters), got {name!r}"
        )
    return name


def quoted_schema(name: str) -> str:
    """The checked name as a quoted identifier (for SQL text and ``search_path``)."""
    return f'"{schema_name(name)}"'


def create_schema_sql(name: str) -> str:
    """``CREATE SCHEMA`` for a checked name: DDL takes no parameters."""
    return f"CREATE SCHEMA IF NOT EXISTS {quoted_schema(name)}"


def setup_lock_key(schema: str | None) -> str:
    """The setup lock's key: the historical one for the default location, so older
    versions still wait for newer ones; one of its own per schema."""
    return _SETUP_LOCK if schema is None else f"{_SETUP_LOCK}:{schema_name(schema)}"


# -- writes ---------------------------------------------------------------------------

# Per-thread transaction locks, taken in key order so two batches never deadlock.
LOCK_THREADS = """
SELECT count(pg_advisory_xact_lock(k))
FROM (
    SELECT DISTINCT hashtextextended(t, 0) AS k FROM unnest($1::text[]) AS t ORDER BY k
) AS keys
"""

# A tombstone removes what was written at or before its outbox position, and only that:
# a replayed (or late) tombstone never touches a thread used again after the delete.
DELETE_THREAD_UPTO = """
WITH c AS (
    DELETE FROM dualsaver_checkpoints WHERE thread_id = $1 AND seq <= $2
), b AS (
    DELETE FROM dualsaver_blobs WHERE thread_id = $1 AND seq <= $2
), d AS (
    DELETE FROM dualsaver_deleted_checkpoints WHERE thread_id = $1
)
DELETE FROM dualsaver_writes WHERE thread_id = $1 AND seq <= $2
"""

UPSERT_TOMBSTONE = """
INSERT INTO dualsaver_tombstones (thread_id, deleted_seq) VALUES ($1, $2)
ON CONFLICT (thread_id) DO UPDATE
SET deleted_seq = GREATEST(dualsaver_tombstones.deleted_seq, EXCLUDED.deleted_seq),
    deleted_at = now()
"""

# A whole batch in one statement (one round trip, atomic): blobs and ordinary writes
# insert-if-absent, special writes (idx < 0) overwrite, checkpoints upsert but leave a
# row that is already identical untouched, so a replay rewrites nothing.
INSERT_RECORDS = """
WITH blobs AS (
    INSERT INTO dualsaver_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
), special_writes AS (
    INSERT INTO dualsaver_writes
        (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
    SELECT * FROM unnest(
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int[],
        $13::text[], $14::text[], $15::bytea[])
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
    SET task_path = EXCLUDED.task_path, channel = EXCLUDED.channel,
        type = EXCLUDED.type, blob = EXCLUDED.blob
    WHERE (dualsaver_writes.task_path, dualsaver_writes.channel,
           dualsaver_writes.type, dualsaver_writes.blob)
        IS DISTINCT FROM (EXCLUDED.task_path, EXCLUDED.channel, EXCLUDED.type, EXCLUDED.blob)
), plain_writes AS (
    INSERT INTO dualsaver_writes
        (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
    SELECT * FROM unnest(
        $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::int[],
        $22::text[], $23::text[], $24::bytea[])
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING
)
INSERT INTO dualsaver_checkpoints
    (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint,
     channel_versions, metadata)
SELECT r.t, r.ns, r.id, r.parent, r.cp, r.versions::jsonb, r.meta::jsonb
FROM unnest($25::text[], $26::text[], $27::text[], $28::text[], $29::bytea[],
            $30::text[], $31::text[]) AS r(t, ns, id, parent, cp, versions, meta)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE
SET parent_checkpoint_id = EXCLUDED.parent_checkpoint_id,
    checkpoint = EXCLUDED.checkpoint,
    channel_versions = EXCLUDED.channel_versions,
    metadata = EXCLUDED.metadata
WHERE (dualsaver_checkpoints.parent_checkpoint_id, dualsaver_checkpoints.checkpoint,
       dualsaver_checkpoints.metadata)
    IS DISTINCT FROM (EXCLUDED.parent_checkpoint_id, EXCLUDED.checkpoint, EXCLUDED.metadata)
"""

WRITE_BATCH_GUARDED = f"SELECT dualsaver_write_batch({', '.join(f'${i}' for i in range(1, 39))})"
WRITE_EXCLUSIVE = f"""
SELECT s.claim, CASE WHEN s.claim[1] = 'ok'
    THEN dualsaver_write_batch({", ".join(f"${i}" for i in range(9, 47))}) END AS refused
FROM (SELECT dualsaver_claim($1, $2, $3, $4, $5, $6, $7, $8) AS claim OFFSET 0) AS s
"""
"""``WRITE_BATCH_GUARDED`` behind a run's claim (exclusive runs), in one round trip and
one transaction: ``thread, holder, op, lease_ms, parent check, parent, head check,
head`` (``dualsaver_claim``), then the 38
arguments of ``WRITE_BATCH_GUARDED``. The claim is evaluated first (the subquery); the
batch is written only if it returns ``{'ok'}``. Returns ``(claim, refused)``."""

LEASE = """
SELECT holder,
       lease_until - floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS left_ms
FROM dualsaver_leases
WHERE thread_id = $1 AND lease_until > floor(extract(epoch FROM clock_timestamp()) * 1000)
"""
"""A thread's live lease (exclusive runs): its holder and the ms left, or no row."""
"""``INSERT_RECORDS`` behind the threads' locks and tombstones, in one round trip:
``lock_threads, rec_threads, rec_seqs``, the 31 arrays of ``batch_params``, then its
four seq arrays. Returns the 1-based positions of the records a tombstone refused."""

# -- reads ----------------------------------------------------------------------------

# The columns of a checkpoint tuple: the row, the blobs at its channel versions and its
# pending writes, aggregated per checkpoint by LATERAL joins (one query for any number
# of checkpoints). ``c`` is a subquery that picks the checkpoints; ``thread`` is ``$1``
# when they are one thread's (so the joins name the thread's partition when planned,
# see ``durable.layout``), else ``c.thread_id``.
_TUPLE_COLUMNS = """
SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint,
       c.metadata::text AS metadata,
       bl.channels AS blob_channels, bl.versions AS blob_versions,
       bl.types AS blob_types, bl.blobs AS blob_data,
       wr.task_ids, wr.task_paths, wr.idxs, wr.channels AS write_channels,
       wr.types AS write_types, wr.blobs AS write_data
FROM ({pick}) AS c
LEFT JOIN LATERAL (
    SELECT array_agg(b.channel) AS channels, array_agg(b.version) AS versions,
           array_agg(b.type) AS types, array_agg(b.blob) AS blobs
    FROM jsonb_each_text(c.channel_versions) AS v
    CROSS JOIN LATERAL (
        -- One primary-key lookup per channel, never a hash of every blob of the thread
        -- (which the planner picks when its row estimate is stale): flat in the
        -- thread's history length. LIMIT 1 keeps the subquery from being flattened.
        SELECT * FROM dualsaver_blobs AS b
        WHERE b.thread_id = {thread} AND b.checkpoint_ns = c.checkpoint_ns
          AND b.channel = v.key COLLATE "C" AND b.version = v.value COLLATE "C"
        LIMIT 1
    ) AS b
) AS bl ON true
LEFT JOIN LATERAL (
    SELECT array_agg(w.task_id) AS task_ids, array_agg(w.task_path) AS task_paths,
           array_agg(w.idx) AS idxs, array_agg(w.channel) AS channels,
           array_agg(w.type) AS types, array_agg(w.blob) AS blobs
    FROM dualsaver_writes AS w
    WHERE w.thread_id = {thread} AND w.checkpoint_ns = c.checkpoint_ns
      AND w.checkpoint_id = c.checkpoint_id
) AS wr ON true
ORDER BY c.checkpoint_id DESC, c.thread_id, c.checkpoint_ns
"""

_PICK_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, "
    "channel_versions, metadata"
)

# Latest: a backward scan of the primary key, flat in the thread's history length.
GET_LATEST = _TUPLE_COLUMNS.format(
    pick=f"SELECT {_PICK_COLUMNS} FROM dualsaver_checkpoints "
    "WHERE thread_id = $1 AND checkpoint_ns = $2 ORDER BY checkpoint_id DESC LIMIT 1",
    thread="$1",
)

GET_BY_ID = _TUPLE_COLUMNS.format(
    pick=f"SELECT {_PICK_COLUMNS} FROM dualsaver_checkpoints "
    "WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = $3",
    thread="$1",
)


# Past the row ``(checkpoint_id, thread_id, checkpoint_ns)`` in list order.
_AFTER = (
    "checkpoint_id <= ${0} AND (checkpoint_id < ${0} OR (thread_id, checkpoint_ns) > (${1}, ${2}))"
)


def list_sql(
    *,
    thread: bool,
    namespace: bool,
    checkpoint: bool,
    filter: bool,
    before: bool,
    after: bool = False,
    limit: bool,
) -> str:
    """The ``alist`` query for the arguments present; parameters are numbered in the
    order of the keyword arguments (``after`` takes three: the last row's
    ``checkpoint_id, thread_id, checkpoint_ns``).

    Rows come in ``(checkpoint_id DESC, thread_id, checkpoint_ns)`` order, and
    ``after`` continues that order past the last row read (keyset paging): the full
    tuple, since a checkpoint id can repeat across threads and namespaces (a copied
    thread keeps its ids). Its ``checkpoint_id <= $`` half lets one namespace's listing
    seek in the primary key.
    """
    wheres: list[str] = []
    n = 0
    for present, predicate in (
        (thread, "thread_id = ${}"),
        (namespace, "checkpoint_ns = ${}"),
        (checkpoint, "checkpoint_id = ${}"),
        (filter, "metadata @> ${}::jsonb"),
        (before, "checkpoint_id < ${}"),
        (after, _AFTER),
    ):
        if present:
            n += 1
            wheres.append(predicate.format(n, n + 1, n + 2))
    if after:
        n += 2
    pick = f"SELECT {_PICK_COLUMNS} FROM dualsaver_checkpoints"
    if wheres:
        pick += " WHERE " + " AND ".join(wheres)
    pick += " ORDER BY checkpoint_id DESC, thread_id, checkpoint_ns"
    if limit:
        pick += f" LIMIT ${n + 1}"
    return _TUPLE_COLUMNS.format(pick=pick, thread="$1" if thread else "c.thread_id")


# -- deletes and copies ---------------------------------------------------------------

# One thread per execution (``executemany`` for several): ``thread_id = $1`` names one
# partition even in a generic plan, where ``= ANY($1)`` would scan them all.
DELETE_THREAD = """
WITH c AS (
    DELETE FROM dualsaver_checkpoints WHERE thread_id = $1
), b AS (
    DELETE FROM dualsaver_blobs WHERE thread_id = $1
), d AS (
    DELETE FROM dualsaver_deleted_checkpoints WHERE thread_id = $1
)
DELETE FROM dualsaver_writes WHERE thread_id = $1
"""

RUN_THREADS = """
SELECT DISTINCT thread_id FROM dualsaver_checkpoints
WHERE metadata ->> 'run_id' = ANY($1::text[])
"""

# One thread of the runs' (``RUN_THREADS``) per execution.
DELETE_FOR_RUNS = """
DELETE FROM dualsaver_checkpoints
WHERE metadata ->> 'run_id' = ANY($1::text[]) AND thread_id = $2
RETURNING thread_id, checkpoint_ns, checkpoint_id, channel_versions::text AS channel_versions
"""

# Remembered so a write of a deleted run that is still on its way is dropped on arrival.
REMEMBER_DELETED_CHECKPOINTS = """
INSERT INTO dualsaver_deleted_checkpoints (thread_id, checkpoint_ns, checkpoint_id)
SELECT $1::text, * FROM unnest($2::text[], $3::text[])
ON CONFLICT DO NOTHING
"""

DELETE_RUN_WRITES = """
DELETE FROM dualsaver_writes AS w
USING unnest($2::text[], $3::text[]) AS d(checkpoint_ns, checkpoint_id)
WHERE w.thread_id = $1 AND w.checkpoint_ns = d.checkpoint_ns
  AND w.checkpoint_id = d.checkpoint_id
"""

# Blobs a deleted checkpoint used that no remaining checkpoint of the namespace uses.
GC_BLOBS = """
DELETE FROM dualsaver_blobs AS b
USING unnest($3::text[], $4::text[]) AS f(channel, version)
WHERE b.thread_id = $1 AND b.checkpoint_ns = $2
  AND b.channel = f.channel AND b.version = f.version
  AND NOT EXISTS (
      SELECT 1 FROM dualsaver_checkpoints AS c
      WHERE c.thread_id = $1 AND c.checkpoint_ns = $2
        AND c.channel_versions ->> f.channel = f.version
  )
"""

# The complete chain (checkpoints, blobs and writes), keeping ids and timestamps.
COPY_THREAD = """
WITH c AS (
    INSERT INTO dualsaver_checkpoints
        (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint,
         channel_versions, metadata, created_at)
    SELECT $2, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint,
           channel_versions, metadata, created_at
    FROM dualsaver_checkpoints WHERE thread_id = $1
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO NOTHING
), b AS (
    INSERT INTO dualsaver_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT $2, checkpoint_ns, channel, version, type, blob
    FROM dualsaver_blobs WHERE thread_id = $1
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
)
INSERT INTO dualsaver_writes
    (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob,
     created_at)
SELECT $2, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob,
       created_at
FROM dualsaver_writes WHERE thread_id = $1
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING
"""

# -- prune ----------------------------------------------------------------------------

# Per namespace: the latest checkpoint and the DeltaChannels it still has history for.
PRUNE_HEADS = """
SELECT DISTINCT ON (checkpoint_ns) checkpoint_ns, checkpoint_id,
       metadata -> 'counters_since_delta_snapshot' AS counters
FROM dualsaver_checkpoints
WHERE thread_id = $1
ORDER BY checkpoint_ns, checkpoint_id DESC
"""

PRUNE_CHECKPOINTS = """
DELETE FROM dualsaver_checkpoints
WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id <> ALL($3::text[])
RETURNING checkpoint_id, channel_versions::text AS channel_versions
"""

# By the checkpoints deleted: writes may be saved before their checkpoint is.
PRUNE_WRITES = """
DELETE FROM dualsaver_writes
WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = ANY($3::text[])
"""

PRUNE_PARENTS = """
UPDATE dualsaver_checkpoints SET parent_checkpoint_id = NULL
WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = ANY($3::text[])
  AND parent_checkpoint_id <> ALL($3::text[])
"""

# -- DeltaChannel ancestor walk ---------------------------------------------------------

# The parent chain of one checkpoint, walked in SQL. Each row carries ``remaining``: the
# requested channels with no stored value (a non-empty blob) at this row or any row
# between it and the start. The walk stops once nothing remains. Ancestors have smaller
# ids (uuid6 is time-ordered), which also guarantees the walk ends.
# $1 thread, $2 namespace, $3 start id (or NULL: latest), $4 channels,
# $5 whether the start's own blobs count.
_CHAIN = """
WITH RECURSIVE start AS (
    SELECT checkpoint_id FROM dualsaver_checkpoints
    WHERE thread_id = $1 AND checkpoint_ns = $2 {start}
), chain AS (
    SELECT c.checkpoint_id, c.parent_checkpoint_id, c.channel_versions, 0 AS depth,
           CASE WHEN $5::bool THEN ARRAY(
               SELECT ch FROM unnest($4::text[]) AS ch
               WHERE NOT EXISTS (
                   SELECT 1 FROM dualsaver_blobs AS b
                   WHERE b.thread_id = $1 AND b.checkpoint_ns = $2 AND b.channel = ch
                     AND b.version = c.channel_versions ->> ch AND b.type <> 'empty'))
           ELSE $4::text[] END AS remaining
    FROM dualsaver_checkpoints AS c JOIN start AS s ON c.checkpoint_id = s.checkpoint_id
    WHERE c.thread_id = $1 AND c.checkpoint_ns = $2
    UNION ALL
    SELECT p.checkpoint_id, p.parent_checkpoint_id, p.channel_versions, chain.depth + 1,
           ARRAY(
               SELECT ch FROM unnest(chain.remaining) AS ch
               WHERE NOT EXISTS (
                   SELECT 1 FROM dualsaver_blobs AS b
                   WHERE b.thread_id = $1 AND b.checkpoint_ns = $2 AND b.channel = ch
                     AND b.version = p.channel_versions ->> ch AND b.type <> 'empty'))
    FROM chain
    JOIN dualsaver_checkpoints AS p
      ON p.thread_id = $1 AND p.checkpoint_ns = $2
     AND p.checkpoint_id = chain.parent_checkpoint_id
     AND p.checkpoint_id < chain.checkpoint_id
    WHERE cardinality(chain.remaining) > 0
)
"""

_START_LATEST = "ORDER BY checkpoint_id DESC LIMIT 1"
_START_BY_ID = "AND checkpoint_id = $3"

# prune keep_latest: the head and the ancestors its DeltaChannels still need.
DELTA_KEEP_CHAIN = _CHAIN.format(start=_START_BY_ID) + "SELECT checkpoint_id FROM chain"

# get_delta_channel_history in one round trip: per channel, the writes on the path
# from the target's parent back to the nearest ancestor holding a value (the seed,
# whose own writes count too), and that seed blob.
_HISTORY = """
, seeds AS (
    SELECT s.ch, min(chain.depth) AS depth
    FROM chain CROSS JOIN unnest($4::text[]) AS s(ch)
    WHERE chain.depth >= 1 AND NOT (s.ch = ANY(chain.remaining))
    GROUP BY s.ch
)
SELECT 'w' AS kind, chain.depth, w.channel, w.task_id, w.task_path, w.idx, w.type, w.blob
FROM chain
JOIN dualsaver_writes AS w
  ON w.thread_id = $1 AND w.checkpoint_ns = $2 AND w.checkpoint_id = chain.checkpoint_id
LEFT JOIN seeds ON seeds.ch = w.channel
WHERE chain.depth >= 1 AND w.channel = ANY($4::text[])
  AND (seeds.depth IS NULL OR chain.depth <= seeds.depth)
UNION ALL
SELECT 'b', seeds.depth, b.channel, NULL, NULL, NULL, b.type, b.blob
FROM seeds
JOIN chain ON chain.depth = seeds.depth
CROSS JOIN LATERAL (
    -- A primary-key lookup per seed, never a hash of the thread's blobs (see _TUPLE_COLUMNS).
    SELECT * FROM dualsaver_blobs AS b
    WHERE b.thread_id = $1 AND b.checkpoint_ns = $2 AND b.channel = seeds.ch COLLATE "C"
      AND b.version = (chain.channel_versions ->> seeds.ch) COLLATE "C"
    LIMIT 1
) AS b
"""

# $3 is unused by the latest form but kept so both take the same parameters.
DELTA_HISTORY_LATEST = _CHAIN.format(start="AND $3::text IS NULL " + _START_LATEST) + _HISTORY
DELTA_HISTORY_BY_ID = _CHAIN.format(start=_START_BY_ID) + _HISTORY

# -- retention (``durable.retention``) ----------------------------------------------------

# The next threads in id order after $1, at most $2: a loose index scan (one primary-key
# probe per thread), so a thread's length costs nothing here.
RETENTION_THREADS = """
WITH RECURSIVE t AS (
    (SELECT thread_id FROM dualsaver_checkpoints WHERE thread_id > $1
     ORDER BY thread_id LIMIT 1)
    UNION ALL
    SELECT (SELECT c.thread_id FROM dualsaver_checkpoints AS c
            WHERE c.thread_id > t.thread_id ORDER BY c.thread_id LIMIT 1)
    FROM t WHERE t.thread_id IS NOT NULL
)
SELECT thread_id FROM t WHERE thread_id IS NOT NULL LIMIT $2
"""

# What the policy looks at, per checkpoint of one thread: age, parent, DeltaChannel
# counters, and whether it holds an interrupt (a pending ``__interrupt__`` write).
RETENTION_CHECKPOINTS = """
SELECT c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.created_at,
       c.metadata -> 'counters_since_delta_snapshot' AS counters,
       EXISTS (SELECT 1 FROM dualsaver_writes AS w
               WHERE w.thread_id = $1 AND w.checkpoint_ns = c.checkpoint_ns
                 AND w.checkpoint_id = c.checkpoint_id AND w.channel = '__interrupt__')
           AS interrupted
FROM dualsaver_checkpoints AS c
WHERE c.thread_id = $1
"""

RETENTION_DELETE = """
DELETE FROM dualsaver_checkpoints
WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = ANY($3::text[])
RETURNING checkpoint_id, channel_versions::text AS channel_versions
"""

# Kept checkpoints whose parent was removed start the history there.
RETENTION_ORPHANS = """
UPDATE dualsaver_checkpoints SET parent_checkpoint_id = NULL
WHERE thread_id = $1 AND checkpoint_ns = $2 AND parent_checkpoint_id = ANY($3::text[])
"""

# Remembered removals older than $2 are forgotten (a late write has long arrived).
RETENTION_FORGET = """
DELETE FROM dualsaver_deleted_checkpoints WHERE thread_id = $1 AND deleted_at < $2
"""

# One sweeper at a time per schema: a session lock, held for one batch of threads.
RETENTION_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
RETENTION_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"

# Retention: the ancestors DeltaChannels need, from every checkpoint in $3 (a text[]).
RETENTION_DELTA_KEEP = (
    _CHAIN.format(start="AND checkpoint_id = ANY($3::text[])")
    + "SELECT DISTINCT checkpoint_id FROM chain"
)

# -- audit and introspection ------------------------------------------------------------

# In the order of the run: by the checkpoint a write belongs to (uuid6 ids are
# time-ordered at creation), then by when it was saved. Not by save time alone: LangGraph
# saves a step's writes in the background, so they can commit after the next step's.
AUDIT = """
SELECT w.checkpoint_ns, w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel,
       w.type, w.blob, w.created_at,
       CASE WHEN jsonb_typeof(c.metadata -> 'step') = 'number'
            THEN (c.metadata ->> 'step')::numeric::bigint END AS step
FROM dualsaver_writes AS w
LEFT JOIN dualsaver_checkpoints AS c
  ON c.thread_id = $1 AND c.checkpoint_ns = w.checkpoint_ns
 AND c.checkpoint_id = w.checkpoint_id
WHERE w.thread_id = $1
ORDER BY w.checkpoint_id, w.created_at, w.checkpoint_ns, w.task_path, w.task_id, w.idx
"""

# The latest root-namespace checkpoint of each thread, newest thread first.
THREADS = """
SELECT t.thread_id, t.checkpoint_id, t.step, t.created_at, t.checkpoints
FROM (
    SELECT DISTINCT ON (thread_id) thread_id, checkpoint_id, metadata, created_at,
           CASE WHEN jsonb_typeof(metadata -> 'step') = 'number'
                THEN (metadata ->> 'step')::numeric::bigint END AS step,
           count(*) OVER (PARTITION BY thread_id) AS checkpoints
    FROM dualsaver_checkpoints
    WHERE checkpoint_ns = ''
    ORDER BY thread_id, checkpoint_id DESC
) AS t
WHERE $1::jsonb IS NULL OR t.metadata @> $1::jsonb
ORDER BY t.created_at DESC, t.thread_id
LIMIT $2
"""

THREAD_INFO = """
SELECT (SELECT count(*) FROM dualsaver_checkpoints WHERE thread_id = $1) AS checkpoints,
       (SELECT count(*) FROM dualsaver_blobs WHERE thread_id = $1) AS blobs,
       (SELECT count(*) FROM dualsaver_writes WHERE thread_id = $1) AS writes
"""

# Rows of a table (its partitions' included), as the planner last estimated them.
ESTIMATED_ROWS = """
SELECT coalesce(sum(c.reltuples) FILTER (WHERE c.reltuples > 0), 0)::float8
FROM pg_class c
WHERE c.oid = to_regclass($1)
   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass($1))
"""
VALUE_TABLES = ("dualsaver_blobs", "dualsaver_writes")


def sample_values_sql(table: str) -> str:
    """Random values of ``table`` (one of ``VALUE_TABLES``): type, stored size and the
    first 18 bytes (a zstd frame header at most), from ``$1`` percent of its pages."""
    if table not in VALUE_TABLES:
        raise ValueError(f"not a value table: {table!r}")
    return f"""
SELECT type, octet_length(blob) AS stored, substring(blob FROM 1 FOR 18) AS head
FROM {table} TABLESAMPLE SYSTEM ($1)
WHERE blob IS NOT NULL AND type <> 'empty'
LIMIT $2
"""


# -- parameters -----------------------------------------------------------------------


def filter_param(filter: Mapping[str, Any] | None) -> str | None:
    """A metadata filter as a JSONB parameter, or ``None`` when there is none or it
    holds NUL (which no stored metadata can)."""
    if not filter:
        return None
    if _has_nul(filter):
        return None
    try:
        return json.dumps(filter, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidMetadataError(f"filter cannot be sent as JSON: {exc}") from exc


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def _columns(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    rows = list(rows)
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def batch_params(
    records: Iterable[CheckpointRecord | WritesRecord], seqs: Iterable[int] | None = None
) -> list[list[Any]]:
    """The 31 column arrays of ``INSERT_RECORDS``, in arrival order; with ``seqs`` (one
    per record), also the four seq arrays of ``dualsaver_write_batch`` (per row, the
    highest seq of the records that carry it).

    Rows that would hit one key twice in the statement are merged first, by the same
    rules as the tables: a checkpoint's last version wins, a blob and an ordinary write
    keep their first, a special write (idx < 0) its last.
    """
    blobs: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    special: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    plain: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    checkpoints: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    row_seq: dict[tuple[Any, ...], int] = {}
    seq_of = iter(seqs) if seqs is not None else None
    for record in records:
        seq = next(seq_of) if seq_of is not None else 0
        thread_id, ns = record.thread_id, record.checkpoint_ns
        touched: list[tuple[Any, ...]] = []
        if isinstance(record, CheckpointRecord):
            versions = record_versions(record)
            versions_json = json.dumps(
                {channel: version_key(v) for channel, v in versions.items()},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            key: tuple[Any, ...] = ("c", thread_id, ns, record.checkpoint_id)
            checkpoints.pop(key, None)  # keep arrival order for the last version
            checkpoints[key] = (
                *key[1:],
                record.parent_checkpoint_id,
                record.checkpoint,
                versions_json,
                record.metadata.decode("utf-8"),
            )
            touched.append(key)
            for blob in record.blobs:
                key = ("b", thread_id, ns, blob.channel, blob.version)
                blobs.setdefault(key, (*key[1:], blob.type, blob.data))
                touched.append(key)
        else:
            for write in record.writes:
                key = ("w", thread_id, ns, record.checkpoint_id, write.task_id, write.idx)
                row = (
                    thread_id, ns, record.checkpoint_id, write.task_id, write.task_path,
                    write.idx, write.channel, write.type, write.data,
                )  # fmt: skip
                if write.overwrites:
                    special[key] = row
                else:
                    plain.setdefault(key, row)
                touched.append(key)
        for key in touched:
            row_seq[key] = max(row_seq.get(key, seq), seq)
    columns = [
        *_columns(blobs.values(), 6),
        *_columns(special.values(), 9),
        *_columns(plain.values(), 9),
        *_columns(checkpoints.values(), 7),
    ]
    if seqs is None:
        return columns
    return [
        *columns,
        *([row_seq[k] for k in rows] for rows in (blobs, special, plain, checkpoints)),
    ]
