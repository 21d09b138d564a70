"""Test helpers over the product's LocalPrometheus (planted data, free ports)."""

from __future__ import annotations

from pathlib import Path

from neuralops.servers.tooling.localprom import LocalPrometheus, Series, available, openmetrics

from tests.conftest import free_port

__all__ = ["PrometheusProcess", "Series", "openmetrics"]


class PrometheusProcess(LocalPrometheus):
    def __init__(self, root: Path, *, scrape: list[str] | None = None) -> None:
        assert available(), "prometheus/promtool not found: scripts/bootstrap.sh installs them"
        super().__init__(root, free_port(), scrape=scrape)
