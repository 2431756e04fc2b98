-- The named statements of the PostgreSQL store, loaded by jobdeck.store.sql.
-- Placeholders in braces are filled in once by the adapter: {columns} (the job columns),
-- {terminal} (the terminal statuses), {s} (the quoted schema), {jcolumns};
-- a few statements also take lists of parameter marks at run time (named in their text).

-- name: select_job
-- One job by id.
SELECT {columns} FROM {s}.jobs WHERE id = %s

-- name: select_jobs
-- Jobs by ids.
SELECT {columns} FROM {s}.jobs WHERE id = ANY(%s)

-- name: insert_jobs
-- Insert a batch of new queued jobs in one statement (see part_inserted). Only the ids
-- inserted come back, in no particular order.
{part_inserted}

-- name: part_inserted
-- Part of insert_jobs and insert_new: new queued jobs from one JSON document holding a list
-- of rows [id, kind, params, queue, priority, max_attempts, timeout, run_at, labels] (timeout
-- as the text of a float, run_at null for now; see rows.spec_rows): one parameter, encoded
-- by one call on the client, cheaper there than an array per column. Existing ids, and
-- repeats of an id within the batch, are left alone (the caller compares specs); rows go
-- in the document's order, so an id's first row inserts it.
INSERT INTO {s}.jobs (id, kind, params, queue, priority, status, max_attempts, timeout, run_at,
                      created_at, updated_at, labels)
SELECT r->>0, r->>1, r->2, r->>3, (r->>4)::integer, 'queued', (r->>5)::integer,
       (r->>6)::double precision, coalesce((r->>7)::bigint, %(now)s::bigint),
       %(now)s::bigint, %(now)s::bigint, r->8
FROM jsonb_array_elements(%(rows)s::jsonb) AS r
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: insert_new
-- insert_jobs as one statement committed on its own (no BEGIN, no COMMIT: one round trip),
-- for one-job enqueues, which the jobs already there cannot make fail: it writes the new ids
-- and leaves the others to the caller. When %(notify)s, it notifies %(channel)s of the jobs
-- inserted (work added; the ids `*` past %(max_ids)s bytes). One row: the ids inserted,
-- joined by commas.
WITH inserted AS (
    {part_inserted}
),
summary AS MATERIALIZED (
    SELECT coalesce(string_agg(id, ','), '') AS ids FROM inserted
)
SELECT s.ids, CASE WHEN %(notify)s AND s.ids <> '' THEN pg_notify(
    %(channel)s, 'w|' || CASE WHEN octet_length(s.ids) > %(max_ids)s THEN '*' ELSE s.ids END)
END
FROM summary AS s

-- name: claim
-- Lease up to :limit runnable jobs of the worker's queues and kinds (see part_picked and
-- part_claimed).
WITH picked AS (
    {part_picked}
)
{part_claimed}

-- name: part_picked
-- Part of claim and cycle: the ids of up to :limit runnable jobs of the worker's queues and
-- kinds, locked, priority first, then oldest run_at. Each queue is read on its own
-- (LATERAL), so that the jobs_claim index gives the order: with `queue = ANY(...)` the
-- planner reads and sorts every queued job of the queues instead.
SELECT c.id FROM unnest(%(queues)s::text[]) AS q(name),
LATERAL (
    SELECT id, priority, run_at FROM {s}.jobs
    WHERE status = 'queued' AND queue = q.name AND kind = ANY(%(kinds)s)
          AND run_at <= %(now)s
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AS c
ORDER BY c.priority DESC, c.run_at, c.id
LIMIT %(limit)s

-- name: part_claimed
-- Part of claim and cycle: lease the jobs `picked` to the worker; attempt + 1, progress
-- starts again.
UPDATE {s}.jobs AS j
SET status = 'running', worker = %(worker)s, attempt = attempt + 1, started_at = %(now)s,
    finished_at = NULL, lease_expires_at = %(lease)s, updated_at = %(now)s,
    version = version + 1, progress_current = 0, progress_total = NULL,
    progress_message = NULL
FROM picked WHERE j.id = picked.id
RETURNING {jcolumns}

-- name: claimed_at
-- The jobs a worker claimed at one instant: what an earlier try of a claim took when its
-- commit went through but the answer was lost with the connection.
SELECT {columns} FROM {s}.jobs WHERE worker = %s AND status = 'running' AND started_at = %s

-- name: next_due
-- The earliest run_at among queued jobs of some queues and kinds.
SELECT min(run_at) AS due FROM {s}.jobs
WHERE status = 'queued' AND queue = ANY(%s) AND kind = ANY(%s)

-- name: seen_worker
-- Record a worker as alive.
INSERT INTO {s}.workers (id, started_at, last_seen) VALUES (%s, %s, %s)
ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen

-- name: renew_leases
-- Renew the leases a worker holds; report which jobs were asked to stop.
UPDATE {s}.jobs SET lease_expires_at = %s
WHERE id = ANY(%s) AND worker = %s AND status = 'running'
RETURNING id, cancel_requested

-- name: save_progress
-- The latest progress of running jobs, from the worker that holds them.
UPDATE {s}.jobs AS j
SET progress_current = p.current, progress_total = p.total, progress_message = p.message,
    updated_at = %(now)s, version = j.version + 1
FROM unnest(%(ids)s::text[], %(currents)s::float8[], %(totals)s::float8[],
            %(messages)s::text[]) AS p(id, current, total, message)
WHERE j.id = p.id AND j.worker = %(worker)s AND j.status = 'running'
RETURNING j.id

-- name: finish
-- Finished runs, from the worker that holds the jobs, for the attempt each ran: one
-- statement for a whole batch (see part_outcomes and part_finished).
WITH o AS (
    {part_outcomes}
)
{part_finished}

-- name: part_outcomes
-- Part of finish and cycle: the finished runs of a batch from one JSON document (see
-- finish_rows in the adapter), one row per run.
SELECT r->>0 AS id, r->>1 AS kind, (r->>2)::bigint AS retry_at,
       nullif(r->3, 'null'::jsonb) AS error, r->4 AS result,
       (r->>5)::bigint AS finished_at, (r->>6)::int AS attempt,
       (r->>7)::boolean AS has_progress, (r->>8)::float8 AS current,
       (r->>9)::float8 AS total, r->>10 AS message
FROM jsonb_array_elements(%(rows)s::jsonb) AS r

-- name: part_finished
-- Part of finish and cycle: end the runs `o` of jobs the worker holds, for the attempt each
-- ran. A cancel request beats every other ending; a failure is queued again (at retry_at)
-- while attempts remain and the worker gave a retry time. Where has_progress, the run's
-- last progress too (one statement instead of save_progress and finish).
UPDATE {s}.jobs AS j
SET status = CASE
        WHEN j.cancel_requested THEN 'cancelled'
        WHEN o.kind = 'succeeded' THEN 'succeeded'
        WHEN o.kind = 'cancelled' THEN 'cancelled'
        WHEN o.kind = 'failed' AND o.retry_at IS NOT NULL AND j.attempt < j.max_attempts
            THEN 'queued'
        ELSE 'failed' END,
    result = CASE WHEN o.kind = 'succeeded' AND NOT j.cancel_requested THEN o.result END,
    error = CASE WHEN o.kind = 'failed' THEN o.error ELSE j.error END,
    attempt_errors = CASE WHEN o.kind = 'failed'
        THEN j.attempt_errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'type', o.error->>'type',
            'message', o.error->>'message', 'at', %(now)s::bigint))
        ELSE j.attempt_errors END,
    run_at = CASE WHEN o.kind = 'failed' AND o.retry_at IS NOT NULL
                       AND j.attempt < j.max_attempts AND NOT j.cancel_requested
                  THEN o.retry_at ELSE j.run_at END,
    finished_at = CASE WHEN o.kind = 'failed' AND o.retry_at IS NOT NULL
                            AND j.attempt < j.max_attempts AND NOT j.cancel_requested
                       THEN NULL ELSE o.finished_at END,
    progress_current = CASE WHEN o.has_progress THEN o.current ELSE j.progress_current END,
    progress_total = CASE WHEN o.has_progress THEN o.total ELSE j.progress_total END,
    progress_message = CASE WHEN o.has_progress THEN o.message ELSE j.progress_message END,
    lease_expires_at = NULL, updated_at = %(now)s, version = j.version + 1
FROM o
WHERE j.id = o.id AND j.worker = %(worker)s AND j.status = 'running'
      AND (o.attempt IS NULL OR j.attempt = o.attempt)
RETURNING j.id, j.status

-- name: cycle
-- One cycle of a busy worker as one statement, committed on its own (no BEGIN, no COMMIT:
-- one round trip): finish the runs of %(rows)s (as finish), claim up to :limit jobs (as
-- claim), mark the worker alive when %(seen)s, and notify %(channel)s of every job changed
-- (the payload as the adapter's _payload makes it, the ids `*` past %(max_ids)s bytes).
-- Every part sees the snapshot the statement started with: a run the finish queues again
-- stays queued (visible to cancels, to other workers) until a later claim. One row per job
-- claimed (its columns after two others), or one with the job's columns NULL when none; the
-- first carries the ids the finish changed (joined by commas, once: not a copy per row),
-- each whether it queued one again.
WITH o AS (
    {part_outcomes}
),
done AS (
    {part_finished}
),
picked AS (
    {part_picked}
),
claimed AS (
    {part_claimed}
),
seen AS (
    INSERT INTO {s}.workers (id, started_at, last_seen)
    SELECT %(worker)s, %(now)s, %(now)s WHERE %(seen)s
    ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen
),
summary AS MATERIALIZED (
    SELECT d.finished, d.requeued,
           array_to_string(d.finished || (SELECT array_agg(id) FROM claimed), ',') AS ids
    FROM (SELECT coalesce(array_agg(id), ARRAY[]::text[]) AS finished,
                 coalesce(bool_or(status = 'queued'), false) AS requeued
          FROM done) AS d
),
notified AS MATERIALIZED (
    SELECT s.*, CASE WHEN s.ids <> '' OR s.requeued THEN pg_notify(
        %(channel)s,
        CASE WHEN s.requeued THEN 'w' ELSE '' END || '|'
        || CASE WHEN octet_length(s.ids) > %(max_ids)s THEN '*' ELSE s.ids END) END
    FROM summary AS s
)
SELECT CASE WHEN row_number() OVER () = 1 THEN array_to_string(n.finished, ',') END,
       n.requeued, c.*
FROM notified AS n LEFT JOIN claimed AS c ON true

-- name: hand_back
-- A run handed back at shutdown: queued again with its attempt given back (or cancelled,
-- when that was asked).
UPDATE {s}.jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END,
    finished_at = CASE WHEN cancel_requested THEN %(now)s::bigint END,
    run_at = CASE WHEN cancel_requested THEN run_at ELSE %(now)s::bigint END,
    lease_expires_at = NULL, updated_at = %(now)s, version = version + 1
WHERE id = %(id)s AND worker = %(worker)s AND status = 'running'
      AND (%(attempt)s::int IS NULL OR attempt = %(attempt)s::int)
RETURNING id, status

-- name: rescue_expired
-- Running jobs whose lease expired: cancelled when that was asked, queued again at
-- once while attempts remain, failed with WorkerLost otherwise.
WITH expired AS (
    SELECT id FROM {s}.jobs
    WHERE status = 'running' AND lease_expires_at < %(now)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {s}.jobs AS j
SET status = CASE WHEN j.cancel_requested THEN 'cancelled'
                  WHEN j.attempt < j.max_attempts THEN 'queued' ELSE 'failed' END,
    error = CASE WHEN j.cancel_requested OR j.attempt < j.max_attempts THEN j.error
                 ELSE jsonb_build_object('type', 'WorkerLost', 'message',
                      'worker ' || j.worker || ' stopped renewing its lease',
                      'traceback', NULL) END,
    attempt_errors = CASE WHEN j.cancel_requested THEN j.attempt_errors
        ELSE j.attempt_errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'type', 'WorkerLost',
            'message', 'worker ' || j.worker || ' stopped renewing its lease',
            'at', %(now)s::bigint)) END,
    run_at = CASE WHEN NOT j.cancel_requested AND j.attempt < j.max_attempts
                  THEN %(now)s::bigint ELSE j.run_at END,
    finished_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts
                       THEN %(now)s::bigint END,
    lease_expires_at = NULL, updated_at = %(now)s, version = j.version + 1
FROM expired WHERE j.id = expired.id
RETURNING {jcolumns}

-- name: cancel_queued
-- Cancel a queued job at once.
UPDATE {s}.jobs SET status = 'cancelled', cancel_requested = true, finished_at = %(now)s,
    updated_at = %(now)s, version = version + 1
WHERE id = %(id)s AND status = 'queued'
RETURNING {columns}

-- name: cancel_running
-- Ask a running job's worker to stop it.
UPDATE {s}.jobs SET cancel_requested = true, updated_at = %(now)s, version = version + 1
WHERE id = %(id)s AND status = 'running' AND NOT cancel_requested
RETURNING {columns}

-- name: retry
-- Queue a failed or cancelled job to run now, allowing at least one more attempt.
UPDATE {s}.jobs
SET status = 'queued', run_at = %(now)s, cancel_requested = false, finished_at = NULL,
    result = NULL, lease_expires_at = NULL, max_attempts = greatest(max_attempts, attempt + 1),
    updated_at = %(now)s, version = version + 1
WHERE id = %(id)s AND status IN ('failed', 'cancelled')
RETURNING {columns}

-- name: purge
-- Forget up to N terminal jobs finished before a time, oldest first.
DELETE FROM {s}.jobs WHERE id IN (
    SELECT id FROM {s}.jobs
    WHERE finished_at < %s AND status IN {terminal}
    ORDER BY finished_at
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)

-- name: counts
-- Exact counts per queue and status: the folded counts plus the deltas not folded yet.
SELECT queue, status, sum(n)::bigint AS n FROM (
    SELECT queue, status, n FROM {s}.queue_counts
    UNION ALL
    SELECT queue, status, n FROM {s}.queue_count_deltas
) AS c
GROUP BY queue, status

-- name: fold_counts
-- Fold the count deltas into the counts.
WITH moved AS (DELETE FROM {s}.queue_count_deltas RETURNING queue, status, n)
INSERT INTO {s}.queue_counts (queue, status, n)
SELECT queue, status, sum(n) FROM moved GROUP BY queue, status ORDER BY queue, status
ON CONFLICT (queue, status) DO UPDATE SET n = {s}.queue_counts.n + excluded.n
