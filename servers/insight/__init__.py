"""Insight: anomaly signals from Prometheus series."""
