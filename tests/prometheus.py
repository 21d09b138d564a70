"""A real Prometheus for tests, holding data we planted with promtool.

Series are written as OpenMetrics, turned into TSDB blocks with
``promtool tsdb create-blocks-from openmetrics``, and served by a ``prometheus``
process on a free port (optionally also scraping live targets).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from tests.conftest import free_port

Sample = tuple[float, float]  # (unix seconds, value)


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}" if inner else ""


def openmetrics(series: Iterable[tuple[str, dict[str, str], list[Sample]]]) -> str:
    by_name: dict[str, list[tuple[dict[str, str], list[Sample]]]] = {}
    for name, labels, samples in series:
        by_name.setdefault(name, []).append((labels, samples))
    lines = []
    for name, members in by_name.items():
        lines.append(f"# TYPE {name} gauge")
        for labels, samples in members:
            lines += [f"{name}{_labels(labels)} {v!r} {t:.3f}" for t, v in samples]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class PrometheusProcess:
    def __init__(
        self, root: Path, *, scrape: list[str] | None = None, scrape_interval: str = "1s"
    ) -> None:
        for tool in ("prometheus", "promtool"):
            assert shutil.which(tool), (
                f"{tool} not found: apt-get install prometheus (scripts/bootstrap.sh does)"
            )
        self.root = root
        self.data = root / "tsdb"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = ""
        if scrape:
            targets = ", ".join(f'"{t}"' for t in scrape)
            jobs = f"scrape_configs:\n  - job_name: neuralops\n    scrape_interval: {scrape_interval}\n    static_configs:\n      - targets: [{targets}]\n"
        self.config = root / "prometheus.yml"
        self.config.write_text(f"global:\n  scrape_interval: {scrape_interval}\n{jobs}")
        self.proc: subprocess.Popen[bytes] | None = None

    def plant(self, text: str) -> None:
        src = self.root / "planted.om"
        src.write_text(text)
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(src), str(self.data)],
            check=True,
            capture_output=True,
        )

    def start(self, timeout: float = 60.0) -> PrometheusProcess:
        log = open(self.root / "prometheus.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "prometheus.log").read_text()
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
