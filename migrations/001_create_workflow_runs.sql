-- Workflow runs, one row per (wpk_id, run_id). Portable SQL: runs on Postgres and SQLite.
-- created_at is set by the server per run (a clock reading, not the transaction start),
-- so runs of one batch keep their order; id breaks ties in every ordering.
CREATE TABLE IF NOT EXISTS workflow_runs (
    id uuid PRIMARY KEY,
    wpk_id text NOT NULL,
    run_id text NOT NULL,
    inputs jsonb NOT NULL DEFAULT '{}',
    outputs jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL,
    duration_ms bigint NOT NULL DEFAULT 0,
    node_logs jsonb NOT NULL DEFAULT '[]',
    error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    embedding_status text NOT NULL DEFAULT 'skipped',
    embedding_attempts integer NOT NULL DEFAULT 0,
    embedding_next_at timestamptz,
    embedding_error text NOT NULL DEFAULT '',
    CONSTRAINT workflow_runs_wpk_id_run_id_key UNIQUE (wpk_id, run_id)
);

-- Keyset pagination of a workflow's runs, newest first (ListWorkflowRuns).
CREATE INDEX IF NOT EXISTS workflow_runs_wpk_id_created_at_id_idx
    ON workflow_runs (wpk_id, created_at DESC, id DESC);

-- The embedding worker's queue: only rows still to embed are indexed.
CREATE INDEX IF NOT EXISTS workflow_runs_embedding_due_idx
    ON workflow_runs (embedding_next_at)
    WHERE embedding_status IN ('pending', 'failed');
