-- The registry's workflows, each linked to its newest run.
CREATE TABLE IF NOT EXISTS workflows (
    id text PRIMARY KEY,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    metadata jsonb NOT NULL DEFAULT '{}',
    latest_run_id text,
    latest_run_row_id uuid,
    latest_run_status text,
    latest_run_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Cross-service notifications written in the same transaction as the run they announce.
-- The relay claims due rows with a lease (claimed_until), delivers them and deletes them;
-- a failed delivery moves next_attempt_at forward (exponential backoff).
CREATE TABLE IF NOT EXISTS outbox (
    id uuid PRIMARY KEY,
    topic text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    claimed_until timestamptz,
    last_error text NOT NULL DEFAULT ''
);

CREATE INDEX IF NOT EXISTS outbox_next_attempt_at_idx ON outbox (next_attempt_at);
