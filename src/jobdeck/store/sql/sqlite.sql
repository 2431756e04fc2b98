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
-- then oldest run_at; attempt + 1, progress starts again.
UPDATE jobs
SET status = 'running', worker = :worker, attempt = attempt + 1, started_at = :now,
    finished_at = NULL, lease_expires_at = :lease, updated_at = :now, version = version + 1,
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
-- A finished run, from the worker that holds the job, for the attempt it ran. A cancel
-- request beats every other ending; a failure is queued again (at retry_at) while attempts
-- remain and the worker gave a retry time. With :progress, the run's last progress too (one
-- statement instead of save_progress and finish).
UPDATE jobs
SET status = CASE
        WHEN cancel_requested THEN 'cancelled'
        WHEN :kind = 'succeeded' THEN 'succeeded'
        WHEN :kind = 'cancelled' THEN 'cancelled'
        WHEN :kind = 'failed' AND :retry_at IS NOT NULL AND attempt < max_attempts THEN 'queued'
        ELSE 'failed' END,
    result = CASE WHEN :kind = 'succeeded' AND NOT cancel_requested THEN :result END,
    error = CASE WHEN :kind = 'failed' THEN :error ELSE error END,
    attempt_errors = CASE WHEN :kind = 'failed'
        THEN json_insert(attempt_errors, '$[#]', json_object(
            'attempt', attempt, 'type', :error_type, 'message', :error_message, 'at', :now))
        ELSE attempt_errors END,
    run_at = CASE WHEN :kind = 'failed' AND :retry_at IS NOT NULL AND attempt < max_attempts
                  AND NOT cancel_requested THEN :retry_at ELSE run_at END,
    finished_at = CASE WHEN :kind = 'failed' AND :retry_at IS NOT NULL AND attempt < max_attempts
                       AND NOT cancel_requested THEN NULL ELSE :finished_at END,
    progress_current = CASE WHEN :progress THEN :progress_current ELSE progress_current END,
    progress_total = CASE WHEN :progress THEN :progress_total ELSE progress_total END,
    progress_message = CASE WHEN :progress THEN :progress_message ELSE progress_message END,
    lease_expires_at = NULL, updated_at = :now,
    version = version + 1
WHERE id = :id AND worker = :worker AND status = 'running'
      AND (:attempt IS NULL OR attempt = :attempt)
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
-- Forget up to N terminal jobs finished before a time, oldest first.
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE finished_at < ? AND status IN {terminal}
    ORDER BY finished_at
    LIMIT ?
)
