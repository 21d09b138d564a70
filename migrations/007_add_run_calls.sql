-- Calls made in a run outside any node (Run.calls, issue 10): a model called by a
-- routing function on the START edge. JSON like the calls inside node_logs.
ALTER TABLE workflow_runs ADD COLUMN calls jsonb NOT NULL DEFAULT '[]';
