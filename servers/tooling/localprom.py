"""A local Prometheus process: the one `neuralops up` runs, and the reports and tests use.

It needs the ``prometheus`` and ``promtool`` binaries (Debian package ``prometheus``).
Data can be planted before start: series written as OpenMetrics are turned into TSDB
blocks by ``promtool tsdb create-blocks-from openmetrics``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
from neuralops.servers.tooling.processes import child_command

log = logging.getLogger(__name__)

Sample = tuple[float, float]  # (unix seconds, value)
Series = tuple[str, dict[str, str], list[Sample]]


class PrometheusMissing(RuntimeError):
    pass


class DataDirBusy(OSError):
    """Another process of ours runs a Prometheus on this data directory."""

    def __init__(self, root: Path, holder: str) -> None:
        super().__init__(
            f"the Prometheus data directory {root} is in use by another neuralops "
            f"({holder}); stop that one, or set NEURALOPS_DATA_DIR (or PROM_URL)"
        )


def _alive_prometheus(pid: int, data: Path) -> bool:
    """True if ``pid`` is a running Prometheus on ``data`` (so not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    want = f"--storage.tsdb.path={data}".encode()
    return "prometheus" in Path(os.fsdecode(cmdline[0])).name and want in cmdline


def stop_leftover(root: Path, data: Path, timeout: float = 20.0) -> int | None:
    """Stop a Prometheus an earlier run of ours left on ``data`` (pid file in ``root``);
    returns its pid, or None when there was none."""
    pid_file = root / "prometheus.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive_prometheus(pid, data):
        pid_file.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive_prometheus(pid, data):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline += timeout
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return pid


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
        self.pid_file = root / "prometheus.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None

    def _take_lock(self) -> None:
        """Hold ``root/lock`` while this Prometheus runs: one per data directory."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown pid"
            os.close(fd)
            raise DataDirBusy(self.root, f"pid {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing drops the flock
            self._lock = None

    def plant(self, series: Iterable[Series], *, max_block: str = "") -> None:
        """Write series into TSDB blocks (before :meth:`start`); ``max_block`` (e.g.
        ``"2000h"``) lets a long history go into a few blocks instead of one per 2 h."""
        src = self.root / "planted.om"
        src.write_text(openmetrics(series))
        extra = [f"--max-block-duration={max_block}"] if max_block else []
        subprocess.run(
            [
                "promtool",
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                *extra,
                str(src),
                str(self.data),
            ],
            check=True,
            capture_output=True,
        )

    def start(self, timeout: float = 60.0) -> LocalPrometheus:
        self._take_lock()
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> LocalPrometheus:
        leftover = stop_leftover(self.root, self.data)
        if leftover is not None:
            log.warning("stopped Prometheus pid %d left running by an earlier run", leftover)
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        command, preexec = child_command(
            [
                "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address={self._host}:{self.port}",
            ]
        )
        self.proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
            # ... and it gets SIGTERM if we die without stopping it (even by SIGKILL).
            preexec_fn=preexec,  # noqa: PLW1509 - a prctl, nothing else
        )
        self.pid_file.write_text(f"{self.proc.pid}\n")
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
        raise RuntimeError(f"prometheus not ready after {timeout:g}s; see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.pid_file.unlink(missing_ok=True)
        self._release_lock()
