-- The claim index ends with id, the last key of the claim's order: jobs enqueued in one batch
-- share their run_at, and without id every claim sorted the whole batch again.
DROP INDEX IF EXISTS jobs_claim;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE status = 'queued';
