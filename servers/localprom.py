"""A local Prometheus process: the one `neuralops up` runs, and the reports and tests use.

It needs the ``prometheus`` and ``promtool`` binaries (Debian package ``prometheus``).
Data can be planted before start: series written as OpenMetrics are turned into TSDB
blocks by ``promtool tsdb create-blocks-from openmetrics``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

Sample = tuple[float, float]  # (unix seconds, value)
Series = tuple[str, dict[str, str], list[Sample]]


class PrometheusMissing(RuntimeError):
    pass


def available() -> bool:
    return bool(shutil.which("prometheus") and shutil.which("promtool"))


def openmetrics(series: Iterable[Series]) -> str:
    """OpenMetrics text for gauge series (samples in time order)."""
    by_name: dict[str, list[tuple[dict[str, str], list[Sample]]]] = {}
    for name, labels, samples in series:
        by_name.setdefault(name, []).append((labels, samples))
    lines = []
    for name, members in by_name.items():
        lines.append(f"# TYPE {name} gauge")
        for labels, samples in members:
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            sel = "{" + inner + "}" if inner else ""
            lines += [f"{name}{sel} {v!r} {t:.3f}" for t, v in samples]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class LocalPrometheus:
    def __init__(
        self,
        root: Path,
        port: int,
        *,
        scrape: list[str] | None = None,
        scrape_interval: str = "1s",
        host: str = "127.0.0.1",
    ) -> None:
        if not available():
            raise PrometheusMissing(
                "prometheus/promtool not found: install the Debian package 'prometheus' "
                "(apt-get install prometheus), or set PROM_URL to an existing Prometheus"
            )
        self.root = root
        self.data = root / "tsdb"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"http://{host}:{port}"
        self._host = host
        jobs = ""
        if scrape:
            targets = ", ".join(f'"{t}"' for t in scrape)
            jobs = (
                "scrape_configs:\n  - job_name: neuralops\n"
                f"    scrape_interval: {scrape_interval}\n"
                f"    static_configs:\n      - targets: [{targets}]\n"
            )
        self.config = root / "prometheus.yml"
        self.config.write_text(f"global:\n  scrape_interval: {scrape_interval}\n{jobs}")
        self.log = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def plant(self, series: Iterable[Series]) -> None:
        """Write series into TSDB blocks (before :meth:`start`)."""
        src = self.root / "planted.om"
        src.write_text(openmetrics(series))
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(src), str(self.data)],
            check=True,
            capture_output=True,
        )

    def start(self, timeout: float = 60.0) -> LocalPrometheus:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address={self._host}:{self.port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout:g}s; see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
