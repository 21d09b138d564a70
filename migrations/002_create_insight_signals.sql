-- Anomaly signals from InsightService.Probe. One row per anomalous sample:
-- (series_key, method, sample_time) is unique, so re-probing the same sample adds nothing.
CREATE TABLE IF NOT EXISTS insight_signals (
    id uuid PRIMARY KEY,
    metric text NOT NULL,
    value double precision NOT NULL,
    score double precision NOT NULL,
    hint text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    labels jsonb NOT NULL DEFAULT '{}',
    series_key text NOT NULL,
    method text NOT NULL,
    sample_time timestamptz NOT NULL,
    query text NOT NULL DEFAULT '',
    threshold double precision NOT NULL,
    baseline double precision NOT NULL DEFAULT 0,
    CONSTRAINT insight_signals_series_method_sample_key UNIQUE (series_key, method, sample_time)
);

-- ListSignals: newest sample first, optionally for one metric.
CREATE INDEX IF NOT EXISTS insight_signals_sample_time_id_idx
    ON insight_signals (sample_time DESC, id DESC);
CREATE INDEX IF NOT EXISTS insight_signals_metric_sample_time_id_idx
    ON insight_signals (metric, sample_time DESC, id DESC);
