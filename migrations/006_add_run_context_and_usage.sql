-- Run context for the LangGraph hook's richer records (issue 10): thread and checkpoint,
-- tags, metadata, user/session ids, run-level usage totals and interrupts, plus the
-- indexes ListRuns filters by. Portable SQL: one column per ALTER (SQLite's rule).
ALTER TABLE workflow_runs ADD COLUMN thread_id text NOT NULL DEFAULT '';
ALTER TABLE workflow_runs ADD COLUMN checkpoint_id text NOT NULL DEFAULT '';
ALTER TABLE workflow_runs ADD COLUMN user_id text NOT NULL DEFAULT '';
ALTER TABLE workflow_runs ADD COLUMN session_id text NOT NULL DEFAULT '';
ALTER TABLE workflow_runs ADD COLUMN tags jsonb NOT NULL DEFAULT '[]';
ALTER TABLE workflow_runs ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';
ALTER TABLE workflow_runs ADD COLUMN usage jsonb NOT NULL DEFAULT '{}';
ALTER TABLE workflow_runs ADD COLUMN interrupts jsonb NOT NULL DEFAULT '[]';
ALTER TABLE workflow_runs ADD COLUMN omitted_node_logs integer NOT NULL DEFAULT 0;
ALTER TABLE workflow_runs ADD COLUMN truncated boolean NOT NULL DEFAULT FALSE;

-- ListRuns filters: each keeps the newest-first keyset order inside one workflow.
CREATE INDEX IF NOT EXISTS workflow_runs_thread_idx
    ON workflow_runs (wpk_id, thread_id, created_at DESC, id DESC) WHERE thread_id <> '';
CREATE INDEX IF NOT EXISTS workflow_runs_status_idx
    ON workflow_runs (wpk_id, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS workflow_runs_user_idx
    ON workflow_runs (wpk_id, user_id, created_at DESC, id DESC) WHERE user_id <> '';
CREATE INDEX IF NOT EXISTS workflow_runs_session_idx
    ON workflow_runs (wpk_id, session_id, created_at DESC, id DESC) WHERE session_id <> '';
