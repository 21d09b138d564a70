-- Insight episodes: one row per incident on one series, opened by its first anomalous
-- point and closed after it has been normal for a while. `source` is `watch:<id>` or
-- `probe:<query>`; a series has at most one open episode per source (the partial unique
-- index), so a restarted or concurrent evaluator can never open a second one.
CREATE TABLE IF NOT EXISTS insight_episodes (
    id uuid PRIMARY KEY,
    source text NOT NULL,
    watch_id text NOT NULL DEFAULT '',
    metric text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    series_key text NOT NULL,
    method text NOT NULL,
    query text NOT NULL DEFAULT '',
    threshold double precision NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz,
    peak_time timestamptz NOT NULL,
    peak_score double precision NOT NULL,
    peak_value double precision NOT NULL,
    baseline double precision NOT NULL DEFAULT 0,
    last_seen_time timestamptz NOT NULL,
    evaluated_time timestamptz NOT NULL,
    normal_points integer NOT NULL DEFAULT 0,
    hint text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT insight_episodes_source_series_start_key UNIQUE (source, series_key, start_time)
);

CREATE UNIQUE INDEX IF NOT EXISTS insight_episodes_one_open_idx
    ON insight_episodes (source, series_key) WHERE end_time IS NULL;
CREATE INDEX IF NOT EXISTS insight_episodes_start_time_id_idx
    ON insight_episodes (start_time DESC, id DESC);
CREATE INDEX IF NOT EXISTS insight_episodes_metric_start_time_id_idx
    ON insight_episodes (metric, start_time DESC, id DESC);
CREATE INDEX IF NOT EXISTS insight_episodes_watch_idx
    ON insight_episodes (watch_id, start_time DESC, id DESC);

-- Signals stored before episodes existed become closed one-point episodes.
INSERT INTO insight_episodes (id, source, watch_id, metric, labels, series_key, method, query,
    threshold, start_time, end_time, peak_time, peak_score, peak_value, baseline,
    last_seen_time, evaluated_time, normal_points, hint, created_at)
SELECT id, 'probe:' || query, '', metric, labels, series_key, method, query,
    threshold, sample_time, sample_time, sample_time, score, value, baseline,
    sample_time, sample_time, 0, hint, created_at
FROM insight_signals
WHERE NOT EXISTS (SELECT 1 FROM insight_episodes e WHERE e.id = insight_signals.id);

-- Watches: a query evaluated every `interval_s` by whichever Insight server holds the
-- row's lease; `evaluated_time` is the last grid time done, so each interval runs once.
CREATE TABLE IF NOT EXISTS insight_watches (
    id uuid PRIMARY KEY,
    name text NOT NULL DEFAULT '',
    query text NOT NULL,
    detector jsonb NOT NULL DEFAULT '{}',
    interval_s double precision NOT NULL,
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    evaluated_time timestamptz,
    evaluations integer NOT NULL DEFAULT 0,
    lease_owner text NOT NULL DEFAULT '',
    lease_until timestamptz,
    last_error text NOT NULL DEFAULT ''
);

CREATE INDEX IF NOT EXISTS insight_watches_created_at_id_idx ON insight_watches (created_at, id);
