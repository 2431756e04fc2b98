-- The jobs table, its log lines, live workers and exact per-queue counts.
-- Runs with search_path set to jobdeck's schema (JOBDECK_PG_SCHEMA).
-- Times are integer microseconds since the Unix epoch (UTC).

CREATE TABLE jobs (
    id               text PRIMARY KEY,
    kind             text NOT NULL,
    params           jsonb NOT NULL,
    queue            text NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    status           text NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    cancel_requested boolean NOT NULL DEFAULT false,
    progress_current double precision NOT NULL DEFAULT 0,
    progress_total   double precision,
    progress_message text,
    result           jsonb,
    error            jsonb,
    attempt_errors   jsonb NOT NULL DEFAULT '[]',
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    timeout          double precision,
    run_at           bigint NOT NULL,
    created_at       bigint NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    updated_at       bigint NOT NULL,
    worker           text,
    lease_expires_at bigint,
    version          bigint NOT NULL DEFAULT 1,
    labels           jsonb NOT NULL DEFAULT '{}',
    log_count        integer NOT NULL DEFAULT 0
) WITH (
    -- An update-heavy queue: leave room on each page so that progress and lease updates
    -- stay HOT (no index writes), and vacuum early and often.
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
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
    job_id  text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    at      bigint NOT NULL,
    level   text NOT NULL,
    message text NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE workers (
    id         text PRIMARY KEY,
    started_at bigint NOT NULL,
    last_seen  bigint NOT NULL
);

-- Exact counts per queue and status. Triggers append deltas (no hot row, no lock order to
-- get wrong); maintenance folds them into queue_counts; stats read both.
CREATE TABLE queue_counts (
    queue  text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (queue, status)
);

CREATE TABLE queue_count_deltas (
    queue  text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL
);

CREATE FUNCTION jobs_count_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO queue_count_deltas (queue, status, n)
    SELECT queue, status, count(*) FROM new_rows GROUP BY queue, status;
    RETURN NULL;
END $$;

CREATE FUNCTION jobs_count_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO queue_count_deltas (queue, status, n)
    SELECT queue, status, sum(n) FROM (
        SELECT o.queue, o.status, -1 AS n
        FROM old_rows o JOIN new_rows c ON c.id = o.id
        WHERE o.status <> c.status OR o.queue <> c.queue
        UNION ALL
        SELECT c.queue, c.status, 1 AS n
        FROM old_rows o JOIN new_rows c ON c.id = o.id
        WHERE o.status <> c.status OR o.queue <> c.queue
    ) AS d
    GROUP BY queue, status
    HAVING sum(n) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION jobs_count_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO queue_count_deltas (queue, status, n)
    SELECT queue, status, -count(*) FROM old_rows GROUP BY queue, status;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_counted_on_insert AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_inserted();

CREATE TRIGGER jobs_counted_on_update AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_updated();

CREATE TRIGGER jobs_counted_on_delete AFTER DELETE ON jobs
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_deleted();
