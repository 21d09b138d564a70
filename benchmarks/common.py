"""Shared benchmark plumbing: servers in child processes, timing statistics, output."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from neuralops.servers.tooling.processes import ServerProcess, free_port

__all__ = ["Section", "free_port", "machine", "start_server", "stats_ms"]


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def stats_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"p50": statistics.median(ms), "p99": percentile(ms, 99), "mean": statistics.fmean(ms)}


@dataclass
class Section:
    title: str
    command: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        self.rows.append((name, value))
        print(f"  {name}: {value}", flush=True)

    def markdown(self) -> str:
        lines = [
            f"## {self.title}",
            "",
            f"Command: `{self.command}`",
            "",
            "| measure | value |",
            "|---|---|",
        ]
        lines += [f"| {n} | {v} |" for n, v in self.rows]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines) + "\n"


def machine() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}"
    )


def start_server(
    data_dir: Path,
    services: str = "runhistory",
    postgres_dsn: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> ServerProcess:
    """`neuralops serve` in a child process (so it does not share the benchmark's GIL)."""
    return ServerProcess(
        data_dir, services=services, postgres_dsn=postgres_dsn, extra_env=extra_env
    ).start()
