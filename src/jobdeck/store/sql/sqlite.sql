-- The named statements of the SQLite store, loaded by jobdeck.store.sql.
-- Placeholders in braces are filled in once by the adapter: {columns} (the job columns),
-- {terminal} (the terminal statuses);
-- a few statements also take lists of parameter marks at run time (named in their text).

-- name: select_job
-- One job by id.
SELECT {columns} FROM jobs WHERE id = ?

-- name: select_jobs
-- Jobs by ids, given as one JSON array.
SELECT {columns} FROM jobs WHERE id IN (SELECT value FROM json_each(?))

-- name: insert_jobs
-- Insert a new queued job, run once per job of a batch (executemany) in the transaction that
-- found no job with its id (the caller compares specs first). Positional marks: cheaper
-- than names, a thousand times per batch.
INSERT INTO jobs (id, kind, params, queue, priority, status, max_attempts, timeout, run_at,
                  created_at, updated_at, labels)
VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)

-- name: claim
-- Lease up to :limit runnable jobs of the worker's queues and kinds, priority first,
-- then oldest run_at; attempt + 1, progress starts again. A queued job's finished_at is
-- always NULL already: not set here, so that the jobs_finished index is left alone.
UPDATE jobs
SET status = 'running', worker = :worker, attempt = attempt + 1, started_at = :now,
    lease_expires_at = :lease, updated_at = :now, version = version + 1,
    progress_current = 0, progress_total = NULL, progress_message = NULL
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'queued' AND queue IN ({named_queues}) AND kind IN ({named_kinds})
          AND run_at <= :now
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)
RETURNING {columns}

-- name: any_runnable
-- Is anything runnable? A cheap read before taking the write lock to claim.
SELECT 1 FROM jobs
WHERE status = 'queued' AND queue IN ({queues}) AND kind IN ({kinds}) AND run_at <= ?
LIMIT 1

-- name: renew_leases
-- Renew the leases a worker holds; report which jobs were asked to stop.
UPDATE jobs SET lease_expires_at = ?
WHERE id IN ({ids}) AND worker = ? AND status = 'running'
RETURNING id, cancel_requested

-- name: seen_worker
-- Record a worker as alive.
INSERT INTO workers (id, started_at, last_seen) VALUES (?, ?, ?)
ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen

-- name: save_progress
-- The latest progress of running jobs, from the worker that holds them.
UPDATE jobs
SET progress_current = ?, progress_total = ?, progress_message = ?, updated_at = ?,
    version = version + 1
WHERE id = ? AND worker = ? AND status = 'running'

-- name: finish
-- Finished runs, from the worker that holds the jobs, each for the attempt it ran: one
-- statement for a batch of outcomes (at most one per job). Positional marks: the worker and
-- now, then {outcomes}, one "(?, ...)" row of thirteen marks per outcome, in the columns of o.
-- A cancel request beats every other ending; a failure is queued again (at retry_at) while
-- attempts remain and the worker gave a retry time. With o.progress, the run's last progress
-- too (one statement instead of save_progress and finish).
WITH p (worker, now) AS (VALUES (?, ?)),
o (id, kind, result, error, error_type, error_message, retry_at, finished_at, attempt,
   progress, progress_current, progress_total, progress_message) AS (VALUES {outcomes})
UPDATE jobs
SET status = CASE
        WHEN jobs.cancel_requested THEN 'cancelled'
        WHEN o.kind = 'succeeded' THEN 'succeeded'
        WHEN o.kind = 'cancelled' THEN 'cancelled'
        WHEN o.kind = 'failed' AND o.retry_at IS NOT NULL AND jobs.attempt < jobs.max_attempts
            THEN 'queued'
        ELSE 'failed' END,
    result = CASE WHEN o.kind = 'succeeded' AND NOT jobs.cancel_requested THEN o.result END,
    error = CASE WHEN o.kind = 'failed' THEN o.error ELSE jobs.error END,
    attempt_errors = CASE WHEN o.kind = 'failed'
        THEN json_insert(jobs.attempt_errors, '$[#]', json_object(
            'attempt', jobs.attempt, 'type', o.error_type, 'message', o.error_message,
            'at', p.now))
        ELSE jobs.attempt_errors END,
    run_at = CASE WHEN o.kind = 'failed' AND o.retry_at IS NOT NULL
                  AND jobs.attempt < jobs.max_attempts AND NOT jobs.cancel_requested
             THEN o.retry_at ELSE jobs.run_at END,
    finished_at = CASE WHEN o.kind = 'failed' AND o.retry_at IS NOT NULL
                       AND jobs.attempt < jobs.max_attempts AND NOT jobs.cancel_requested
                  THEN NULL ELSE o.finished_at END,
    progress_current = CASE WHEN o.progress THEN o.progress_current
                            ELSE jobs.progress_current END,
    progress_total = CASE WHEN o.progress THEN o.progress_total ELSE jobs.progress_total END,
    progress_message = CASE WHEN o.progress THEN o.progress_message
                            ELSE jobs.progress_message END,
    lease_expires_at = NULL, updated_at = p.now,
    version = jobs.version + 1
FROM p, o
WHERE jobs.id = o.id AND jobs.worker = p.worker AND jobs.status = 'running'
      AND (o.attempt IS NULL OR jobs.attempt = o.attempt)
RETURNING id, status

-- name: hand_back
-- A run handed back at shutdown: queued again with its attempt given back (or cancelled,
-- when that was asked).
UPDATE jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END,
    finished_at = CASE WHEN cancel_requested THEN :now END,
    run_at = CASE WHEN cancel_requested THEN run_at ELSE :now END,
    lease_expires_at = NULL, updated_at = :now, version = version + 1
WHERE id = :id AND worker = :worker AND status = 'running'
      AND (:attempt IS NULL OR attempt = :attempt)
RETURNING id, status

-- name: rescue_expired
-- Running jobs whose lease expired: cancelled when that was asked, queued again at
-- once while attempts remain, failed with WorkerLost otherwise.
UPDATE jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
    error = CASE WHEN cancel_requested OR attempt < max_attempts THEN error
                 ELSE json_object('type', 'WorkerLost',
                                  'message', 'worker ' || worker || ' stopped renewing its lease',
                                  'traceback', NULL) END,
    attempt_errors = CASE WHEN cancel_requested THEN attempt_errors
        ELSE json_insert(attempt_errors, '$[#]', json_object(
            'attempt', attempt, 'type', 'WorkerLost',
            'message', 'worker ' || worker || ' stopped renewing its lease', 'at', :now)) END,
    run_at = CASE WHEN NOT cancel_requested AND attempt < max_attempts THEN :now ELSE run_at END,
    finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts THEN :now END,
    lease_expires_at = NULL, updated_at = :now, version = version + 1
WHERE status = 'running' AND lease_expires_at < :now
RETURNING {columns}

-- name: cancel_queued
-- Cancel a queued job at once.
UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = :now,
    updated_at = :now, version = version + 1
WHERE id = :id AND status = 'queued'
RETURNING {columns}

-- name: cancel_running
-- Ask a running job's worker to stop it.
UPDATE jobs SET cancel_requested = 1, updated_at = :now, version = version + 1
WHERE id = :id AND status = 'running' AND NOT cancel_requested
RETURNING {columns}

-- name: retry
-- Queue a failed or cancelled job to run now, allowing at least one more attempt.
UPDATE jobs
SET status = 'queued', run_at = :now, cancel_requested = 0, finished_at = NULL, result = NULL,
    lease_expires_at = NULL, max_attempts = max(max_attempts, attempt + 1),
    updated_at = :now, version = version + 1
WHERE id = :id AND status IN ('failed', 'cancelled')
RETURNING {columns}

-- name: purge
-- Forget up to N terminal jobs finished before a time, oldest first, read off the
-- jobs_finished index. (The unary + keeps SQLite from reading jobs_status_created instead:
-- every terminal job of the table, then a sort of them, at every purge.)
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE finished_at < ? AND +status IN {terminal}
    ORDER BY finished_at
    LIMIT ?
)
