-- The jobs table, its log lines, live workers and exact per-queue counts.
-- Times are integer microseconds since the Unix epoch (UTC); JSON documents are TEXT.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    params           TEXT NOT NULL,
    queue            TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress_current REAL NOT NULL DEFAULT 0,
    progress_total   REAL,
    progress_message TEXT,
    result           TEXT,
    error            TEXT,
    attempt_errors   TEXT NOT NULL DEFAULT '[]',
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout          REAL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    worker           TEXT,
    lease_expires_at INTEGER,
    version          INTEGER NOT NULL DEFAULT 1,
    labels           TEXT NOT NULL DEFAULT '{}',
    log_count        INTEGER NOT NULL DEFAULT 0
);

-- The claim: runnable jobs of a queue, priority first, then oldest run_at.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at) WHERE status = 'queued';
-- Lease rescue: running jobs by lease expiry.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
-- Listing newest first, with and without a status filter.
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_status_created ON jobs (status, created_at, id);
-- Retention purge and "finished in the last minute".
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE job_logs (
    job_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE workers (
    id         TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
) WITHOUT ROWID;

-- Exact counts per queue and status, kept by triggers so that stats never scan the table.
CREATE TABLE queue_counts (
    queue  TEXT NOT NULL,
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (queue, status)
) WITHOUT ROWID;

CREATE TRIGGER jobs_counted_on_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO queue_counts (queue, status, n) VALUES (NEW.queue, NEW.status, 1)
    ON CONFLICT (queue, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_on_update AFTER UPDATE OF status, queue ON jobs
WHEN OLD.status IS NOT NEW.status OR OLD.queue IS NOT NEW.queue
BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND status = OLD.status;
    INSERT INTO queue_counts (queue, status, n) VALUES (NEW.queue, NEW.status, 1)
    ON CONFLICT (queue, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_forgotten AFTER DELETE ON jobs
BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND status = OLD.status;
    DELETE FROM job_logs WHERE job_id = OLD.id;
END;
